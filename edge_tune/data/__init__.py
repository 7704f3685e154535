"""Datasets as in-memory tensors with a fixed train/validation split.

Every dataset is loaded whole into memory as float32 tensors (N, C, H, W): 32x32
for digits, CIFAR and image folders, 28x28 for the MNIST family,
normalised per channel with the training split's mean and standard deviation.
Nothing is ever downloaded: the datasets other than ``digits`` are read from
the folder given by ``--data-dir``.

``digits`` is scikit-learn's 8x8 handwritten digits (1,797 images, 10
classes), shipped inside scikit-learn, so it needs no download. Images are
upsampled to 32x32 (bilinear) so CIFAR-style networks keep their geometry.
The split is stratified and seeded by ``SPLIT_SEED``, never by the run's seed:
every run, baseline and trial sees the same validation images. ``--data-dir``
is not used.

- ``data.cifar``: ``cifar10`` and ``cifar100`` from their python-pickle files
- ``data.imagefolder``: ``imagefolder``, one folder of images per class
- ``data.idx``: ``mnist`` and ``fashion-mnist`` from their IDX files, 28x28, the official test set as validation
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from edge_tune.errors import UserError

__all__ = ["Dataset", "available_datasets", "load_dataset", "parse_input_size", "resize", "with_channels"]

SPLIT_SEED = 0  # fixed: the validation set must not move between runs
VAL_FRACTION = 0.2  # of each class
IMAGE_SIZE = 32  # pixels, height and width of digits, CIFAR and image folders unless --input-size says otherwise
MAX_IN_MEMORY_BYTES = 8 * 2**30  # an in-memory dataset resized past this is refused, naming the size


@dataclass(frozen=True)
class Dataset:
    name: str
    x_train: torch.Tensor  # (N, C, H, W) float32, normalised
    y_train: torch.Tensor  # (N,) int64
    x_val: torch.Tensor  # (M, C, H, W) float32, normalised
    y_val: torch.Tensor  # (M,) int64
    num_classes: int
    classes: tuple[str, ...] = ()  # class names, indexed by label; empty when unknown

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one image."""
        c, h, w = self.x_train.shape[1:]
        return (int(c), int(h), int(w))

    @property
    def in_channels(self) -> int:
        return self.input_shape[0]


def with_channels(data: Dataset, channels: int) -> Dataset:
    """``data`` with ``channels`` channels: unchanged, or grey images repeated (1 -> 3)."""
    if data.in_channels == channels:
        return data
    if data.in_channels != 1:
        raise ValueError(f"cannot turn {data.in_channels}-channel images into {channels}-channel ones")
    return replace(
        data,
        x_train=data.x_train.expand(-1, channels, -1, -1).contiguous(),
        x_val=data.x_val.expand(-1, channels, -1, -1).contiguous(),
    )


def _stratified_split(y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(SPLIT_SEED)
    train, val = [], []
    for label in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == label))
        n_val = max(1, round(len(idx) * VAL_FRACTION))
        val.append(idx[:n_val])
        train.append(idx[n_val:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(val))


def _normalise(x_train: torch.Tensor, x_val: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    # Statistics from the training split only, per channel. In place: CIFAR's
    # training split alone is 600 MB as float32.
    mean = x_train.mean(dim=(0, 2, 3), keepdim=True)
    std = x_train.std(dim=(0, 2, 3), keepdim=True).clamp_min(1e-6)
    return x_train.sub_(mean).div_(std), x_val.sub_(mean).div_(std)


def _split(name: str, x: torch.Tensor, y: np.ndarray, classes: tuple[str, ...]) -> Dataset:
    """The fixed stratified split of ``x`` (N, C, H, W) float32 and labels ``y`` (N,)."""
    tr, va = _stratified_split(y)
    x_train, x_val = _normalise(x[tr], x[va])
    labels = torch.from_numpy(y.astype(np.int64))
    return Dataset(name, x_train, labels[tr], x_val, labels[va], num_classes=len(classes), classes=classes)


def _digits(data_dir: Path | None) -> Dataset:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = torch.from_numpy(bunch.images.astype(np.float32) / 16.0).unsqueeze(1)  # (N, 1, 8, 8)
    x = F.interpolate(x, size=(32, 32), mode="bilinear", align_corners=False)  # (N, 1, 32, 32)
    return _split("digits", x, bunch.target, tuple(str(c) for c in bunch.target_names))


def _require_dir(name: str, data_dir: Path | None, layout: str) -> Path:
    """``data_dir``, checked to be a folder; ``layout`` says what it should hold."""
    if data_dir is None:
        raise UserError(f"--data-dir is required for {name}: it should be {layout}")
    if not data_dir.is_dir():
        raise UserError(f"--data-dir {data_dir} is not a folder; for {name} it should be {layout}")
    return data_dir


# The loaders of the datasets that live in files; imported last, they use the helpers above.
from edge_tune.data.cifar import CIFAR10, CIFAR100, load_cifar  # noqa: E402
from edge_tune.data.idx import load_idx  # noqa: E402
from edge_tune.data.imagefolder import load_imagefolder  # noqa: E402

_LOADERS: dict[str, Callable[[Path | None], Dataset]] = {
    "digits": _digits,
    "cifar10": partial(load_cifar, CIFAR10),
    "cifar100": partial(load_cifar, CIFAR100),
    "imagefolder": load_imagefolder,
    "mnist": partial(load_idx, "mnist"),
    "fashion-mnist": partial(load_idx, "fashion-mnist"),
}


def available_datasets() -> list[str]:
    return sorted(_LOADERS)


def load_dataset(
    name: str, data_dir: str | os.PathLike[str] | None = None, input_size: tuple[int, int] | None = None
) -> Dataset:
    """Load a dataset by name, from ``data_dir`` for those that are not built in, at ``input_size`` (H, W)
    pixels, or at its natural size when None.

    Unknown names, a missing ``data_dir`` where one is needed and files not
    in the expected layout raise ``UserError`` naming the file and the layout.
    """
    if name not in _LOADERS:
        raise UserError(f"unknown dataset {name!r}; available: {', '.join(available_datasets())}")
    data = _LOADERS[name](None if data_dir is None else Path(data_dir).expanduser())
    return data if input_size is None else resize(data, input_size)


def parse_input_size(text: str) -> tuple[int, int]:
    """``--input-size``: ``H`` (square) or ``HxW``, whole pixels, at least 1."""
    parts = text.lower().split("x")
    if len(parts) in (1, 2) and all(p.strip().isdigit() and int(p) >= 1 for p in parts):
        h, w = int(parts[0]), int(parts[-1])
        return (h, w)
    raise UserError(f"--input-size {text}: give the input's height, or height x width, in pixels (e.g. 224 or 96x128)")


def resize(data: Dataset, size: tuple[int, int]) -> Dataset:
    """``data`` with every image resized to ``size`` (H, W), bilinear (antialiased when shrinking)."""
    if data.input_shape[1:] == size:
        return data
    pixels = (len(data.x_train) + len(data.x_val)) * data.in_channels * size[0] * size[1]
    if pixels * 4 > MAX_IN_MEMORY_BYTES:
        raise UserError(
            f"--input-size {size[0]}x{size[1]}: {data.name} is held in memory, and at that size it would take "
            f"{pixels * 4 / 2**30:.1f} GiB (the limit is {MAX_IN_MEMORY_BYTES / 2**30:.0f} GiB)"
        )

    def scale(x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)

    return replace(data, x_train=scale(data.x_train), x_val=scale(data.x_val))
