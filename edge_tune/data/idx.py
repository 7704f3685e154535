"""The MNIST family in its IDX files: ``mnist`` and ``fashion-mnist`` from ``--data-dir``, plain or gzipped.

The folder holds the four files of the original distribution::

    train-images-idx3-ubyte[.gz]  train-labels-idx1-ubyte[.gz]
    t10k-images-idx3-ubyte[.gz]   t10k-labels-idx1-ubyte[.gz]

The official split is kept: 60,000 training images, and the 10,000 test
images as the validation set (one image is 0.01 points of top-1). Images stay
at their natural 28x28, one channel, normalised with the training split's
statistics. Without ``--data-dir``, ``fashion-mnist`` is read from where
Debian's ``dataset-fashion-mnist`` package installs it, when it is there.

IDX: a big-endian header of a magic number (0x0000 0803 for images of
unsigned bytes in 3 dimensions, 0x0000 0801 for labels), one 32-bit size per
dimension, then the bytes.
"""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import torch

from edge_tune.data import Dataset, _in_memory
from edge_tune.errors import UserError

__all__ = ["DEBIAN_DIRS", "load_idx", "read_idx"]

FASHION_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
CLASSES = {"mnist": tuple(str(d) for d in range(10)), "fashion-mnist": FASHION_CLASSES}
# Where Debian's packages put the files (dataset-fashion-mnist); used when --data-dir is not given.
DEBIAN_DIRS = {"fashion-mnist": Path("/usr/share/datasets/fashion-mnist")}
_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
_LAYOUT = "a folder with " + ", ".join(_FILES) + " (each plain or .gz)"


def _find(root: Path, stem: str) -> Path:
    for candidate in (root / stem, root / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    raise UserError(f"--data-dir {root}: no {stem} or {stem}.gz there; it should be {_LAYOUT}")


def read_idx(path: Path, dims: int) -> np.ndarray:
    """The unsigned bytes of an IDX file with ``dims`` dimensions (3: images, 1: labels)."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as exc:
        raise UserError(f"cannot read {path}: {exc}") from None
    head = 4 + 4 * dims
    magic = 0x0800 | dims  # unsigned bytes
    if len(data) < head or struct.unpack(">I", data[:4])[0] != magic:
        raise UserError(f"{path}: not an IDX file of unsigned bytes in {dims} dimension(s) (magic 0x{magic:08x})")
    shape = struct.unpack(f">{dims}I", data[4:head])
    if len(data) - head != int(np.prod(shape)):
        raise UserError(
            f"{path}: its header says {' x '.join(map(str, shape))} bytes of data, the file holds {len(data) - head}"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=head).reshape(shape)


def _pair(root: Path, prefix: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (N, 1, 28, 28) float32 in [0, 1] and labels (N,) of ``prefix`` (train or t10k)."""
    images_file, labels_file = _find(root, f"{prefix}-images-idx3-ubyte"), _find(root, f"{prefix}-labels-idx1-ubyte")
    images, labels = read_idx(images_file, 3), read_idx(labels_file, 1)
    if len(images) != len(labels):
        raise UserError(f"{images_file} holds {len(images)} images but {labels_file} holds {len(labels)} labels")
    x = torch.from_numpy(images.astype(np.float32) / 255.0).unsqueeze(1)
    return x, torch.from_numpy(labels.astype(np.int64))


def load_idx(name: str, data_dir: Path | None) -> Dataset:
    root = data_dir if data_dir is not None else DEBIAN_DIRS.get(name)
    if root is None or not root.is_dir():
        hint = " (or install Debian's dataset-fashion-mnist)" if name == "fashion-mnist" else ""
        raise UserError(f"--data-dir is required for {name}{hint}: it should be {_LAYOUT}")
    x_train, y_train = _pair(root, "train")
    x_val, y_val = _pair(root, "t10k")
    classes = CLASSES[name]
    for split, y in (("training", y_train), ("test", y_val)):
        if len(y) and int(y.max()) >= len(classes):
            raise UserError(f"{root}: {name}'s {split} labels go up to {int(y.max())}; it has {len(classes)} classes")
    return _in_memory(name, x_train, y_train, x_val, y_val, classes)
