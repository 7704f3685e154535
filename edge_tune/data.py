"""Datasets as in-memory tensors with a fixed train/validation split.

``digits`` is scikit-learn's 8x8 handwritten digits (1,797 images, 10
classes), shipped inside scikit-learn, so it needs no download. Images are
upsampled to 32x32 (bilinear) so CIFAR-style networks keep their geometry.
The split is stratified and seeded by ``SPLIT_SEED``, never by the run's seed:
every run, baseline and trial sees the same validation images.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from edge_tune.errors import UserError

__all__ = ["Dataset", "available_datasets", "load_dataset"]

SPLIT_SEED = 0  # fixed: the validation set must not move between runs
VAL_FRACTION = 0.2  # of each class


@dataclass(frozen=True)
class Dataset:
    name: str
    x_train: torch.Tensor  # (N, C, H, W) float32, normalised
    y_train: torch.Tensor  # (N,) int64
    x_val: torch.Tensor  # (M, C, H, W) float32, normalised
    y_val: torch.Tensor  # (M,) int64
    num_classes: int

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one image."""
        c, h, w = self.x_train.shape[1:]
        return (int(c), int(h), int(w))

    @property
    def in_channels(self) -> int:
        return self.input_shape[0]


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
    # Statistics from the training split only, per channel.
    mean = x_train.mean(dim=(0, 2, 3), keepdim=True)
    std = x_train.std(dim=(0, 2, 3), keepdim=True).clamp_min(1e-6)
    return (x_train - mean) / std, (x_val - mean) / std


def _digits() -> Dataset:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = torch.from_numpy(bunch.images.astype(np.float32) / 16.0).unsqueeze(1)  # (N, 1, 8, 8)
    x = F.interpolate(x, size=(32, 32), mode="bilinear", align_corners=False)  # (N, 1, 32, 32)
    y = torch.from_numpy(bunch.target.astype(np.int64))
    tr, va = _stratified_split(bunch.target)
    x_train, x_val = _normalise(x[tr], x[va])
    return Dataset("digits", x_train, y[tr], x_val, y[va], num_classes=10)


_LOADERS: dict[str, Callable[[], Dataset]] = {"digits": _digits}


def available_datasets() -> list[str]:
    return sorted(_LOADERS)


def load_dataset(name: str) -> Dataset:
    """Load a dataset by name; unknown names raise ``UserError`` listing the valid ones."""
    if name not in _LOADERS:
        raise UserError(f"unknown dataset {name!r}; available: {', '.join(available_datasets())}")
    return _LOADERS[name]()
