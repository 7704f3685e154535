"""CIFAR-10 and CIFAR-100 from their python-pickle files.

``cifar10`` and ``cifar100`` read the "python version" archives as published,
extracted: ``cifar-10-batches-py/`` (``data_batch_1`` to ``data_batch_5``,
``test_batch``, ``batches.meta``) and ``cifar-100-python/`` (``train``,
``test``, ``meta``). ``--data-dir`` is the folder holding that folder, or that
folder itself. The training split is the training files and the validation
split is the official test file, not a slice of the training files: CIFAR's
test set is the set pruning papers report accuracy on, so the figures measured
here compare with theirs. CIFAR-100 uses its 100 fine labels. The pickles are
read with an unpickler that only builds numpy arrays, lists and dicts, so a
file that is not what it claims to be cannot run code.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edge_tune.data import Dataset, _in_memory, _require_dir
from edge_tune.errors import UserError

__all__ = ["CIFAR10", "CIFAR100", "load_cifar"]


@dataclass(frozen=True)
class _CifarLayout:
    name: str  # dataset name
    title: str  # as its authors spell it
    folder: str  # the archive's top folder
    train: tuple[str, ...]  # files of the training split
    test: str  # the file of the validation split
    meta: str  # the file naming the classes
    label_key: str  # key of the labels in train and test files
    names_key: str  # key of the class names in the meta file
    num_classes: int

    @property
    def files(self) -> tuple[str, ...]:
        return (*self.train, self.test, self.meta)

    @property
    def layout(self) -> str:
        return (
            f"the folder that holds {self.folder}/ ({', '.join(self.files)}), the python version of "
            f"{self.title} extracted as published, or {self.folder}/ itself; nothing is downloaded"
        )


CIFAR10 = _CifarLayout(
    name="cifar10",
    title="CIFAR-10",
    folder="cifar-10-batches-py",
    train=tuple(f"data_batch_{i}" for i in range(1, 6)),
    test="test_batch",
    meta="batches.meta",
    label_key="labels",
    names_key="label_names",
    num_classes=10,
)
CIFAR100 = _CifarLayout(
    name="cifar100",
    title="CIFAR-100",
    folder="cifar-100-python",
    train=("train",),
    test="test",
    meta="meta",
    label_key="fine_labels",
    names_key="fine_label_names",
    num_classes=100,
)

# The only globals a CIFAR pickle may name: what rebuilds a numpy array (and
# bytes, in protocol-2 pickles written by Python 3). Anything else could run code.
_PICKLE_GLOBALS = {
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    ("_codecs", "encode"),
}


class _ArrayUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _PICKLE_GLOBALS:
            raise pickle.UnpicklingError(f"it names {module}.{name}, which is not part of a numpy array")
        return super().find_class(module, name)


def _read_pickle(path: Path, layout: _CifarLayout, keys: tuple[str, ...]) -> dict[str, Any]:
    """The dict in ``path``, keys decoded to str; the official files are Python 2 pickles with byte keys."""
    expected = f"a pickled dict with keys {', '.join(f'b{k!r}' for k in keys)} as in {layout.title}'s python version"
    try:
        with path.open("rb") as f:
            obj = _ArrayUnpickler(f, encoding="bytes").load()
    except Exception as e:  # any failure here means the file is not what the layout says
        raise UserError(f"cannot read {path}: {str(e).rstrip('.')}; expected {expected}") from e
    if not isinstance(obj, dict):
        raise UserError(f"{path} holds a {type(obj).__name__}; expected {expected}")
    found = {k.decode("latin1") if isinstance(k, bytes) else str(k): v for k, v in obj.items()}
    if missing := [k for k in keys if k not in found]:
        raise UserError(f"{path} lacks {', '.join(f'b{k!r}' for k in missing)}; expected {expected}")
    return found


def _as_array(value: Any) -> np.ndarray | None:
    try:
        return np.asarray(value) if isinstance(value, list | tuple | np.ndarray) else None
    except ValueError:  # ragged nested lists
        return None


def _cifar_batch(path: Path, layout: _CifarLayout) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 3072) uint8, each row an image in CHW order, and labels (N,) int64."""
    found = _read_pickle(path, layout, ("data", layout.label_key))
    data, labels = _as_array(found["data"]), _as_array(found[layout.label_key])
    if data is None or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        got = "not an array" if data is None else f"{data.dtype} of shape {data.shape}"
        raise UserError(f"{path}: b'data' must be a uint8 array of shape (N, 3072), one image per row; got {got}")
    key = f"b{layout.label_key!r}"
    if labels is None or labels.dtype.kind not in "iu" or labels.shape != (len(data),):
        got = "not a list" if labels is None else f"{labels.dtype} of shape {labels.shape}"
        raise UserError(f"{path}: {key} must list {len(data)} integer labels, one per row of b'data'; got {got}")
    bad = labels[(labels < 0) | (labels >= layout.num_classes)]
    if len(bad):
        raise UserError(f"{path}: {key} holds label {bad[0]}, outside 0..{layout.num_classes - 1} for {layout.name}")
    return data, labels.astype(np.int64)


def _cifar_classes(path: Path, layout: _CifarLayout) -> tuple[str, ...]:
    names = _read_pickle(path, layout, (layout.names_key,))[layout.names_key]
    if not isinstance(names, list | tuple) or len(names) != layout.num_classes:
        raise UserError(f"{path}: b{layout.names_key!r} must list {layout.num_classes} class names")
    return tuple(n.decode("utf-8", "replace") if isinstance(n, bytes) else str(n) for n in names)


def _cifar_images(data: np.ndarray) -> torch.Tensor:
    # (N, 3072) uint8 -> (N, 3, 32, 32) float32 in [0, 1]: rows are R, G, B planes, each row-major.
    return torch.from_numpy(data.reshape(-1, 3, 32, 32).astype(np.float32)).div_(255.0)


def load_cifar(layout: _CifarLayout, data_dir: Path | None) -> Dataset:
    root = _require_dir(layout.name, data_dir, layout.layout)
    root = root / layout.folder if (root / layout.folder).is_dir() else root
    for file in layout.files:
        if not (root / file).is_file():
            raise UserError(f"missing file {root / file}: for {layout.name}, --data-dir should be {layout.layout}")
    classes = _cifar_classes(root / layout.meta, layout)
    batches = [_cifar_batch(root / file, layout) for file in layout.train]
    test_x, test_y = _cifar_batch(root / layout.test, layout)
    x_train, x_val = _cifar_images(np.concatenate([x for x, _ in batches])), _cifar_images(test_x)
    y_train = torch.from_numpy(np.concatenate([y for _, y in batches]))
    return _in_memory(layout.name, x_train, y_train, x_val, torch.from_numpy(test_y), classes)
