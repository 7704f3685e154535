"""Datasets: a training and a validation ``Split``, each giving its images in batches.

The small datasets are held whole in memory as float32 tensors (N, C, H, W)
(``TensorSplit``): 32x32 for digits and CIFAR, 28x28 for the MNIST family,
normalised per channel with the training split's mean and standard deviation.
Image folders are read from disk batch by batch by a torch ``DataLoader`` with
worker processes (``FolderSplit``, 224x224, ImageNet's normalisation), so
their size is bounded by the disk, not by memory. ``--mean``/``--std`` replace
either normalisation with the one the user's weights were trained with.
Training, evaluation and the device's validation set (``Chunks``) all go
through ``Split.batches``. Nothing is ever downloaded: the datasets other than
``digits`` are read from the folder given by ``--data-dir``.

``digits`` is scikit-learn's 8x8 handwritten digits (1,797 images, 10
classes), shipped inside scikit-learn, so it needs no download. Images are
upsampled to 32x32 (bilinear) so CIFAR-style networks keep their geometry.
The split is stratified and seeded by ``SPLIT_SEED``, never by the run's seed:
every run, baseline and trial sees the same validation images. ``--data-dir``
is not used.

- ``data.cifar``: ``cifar10`` and ``cifar100`` from their python-pickle files
- ``data.imagefolder``: ``imagefolder``, one folder of images per class, streamed
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

from edge_tune.data.splits import Chunks, Split, TensorSplit
from edge_tune.errors import UserError

__all__ = [
    "Chunks",
    "Dataset",
    "Split",
    "TensorSplit",
    "available_datasets",
    "load_dataset",
    "normalised",
    "parse_input_size",
    "parse_stats",
    "resize",
    "with_channels",
]

SPLIT_SEED = 0  # fixed: the validation set must not move between runs
VAL_FRACTION = 0.2  # of each class
IMAGE_SIZE = 32  # pixels, height and width of digits and CIFAR unless --input-size says otherwise
MAX_IN_MEMORY_BYTES = 8 * 2**30  # an in-memory dataset resized past this is refused, naming the size


@dataclass(frozen=True)
class Dataset:
    name: str
    train: Split
    val: Split
    num_classes: int
    classes: tuple[str, ...] = ()  # class names, indexed by label; empty when unknown
    mean: tuple[float, ...] = ()  # per channel: a pixel in [0, 1] reaches the model as (pixel - mean) / std
    std: tuple[float, ...] = ()

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one image."""
        return self.val.image_shape

    @property
    def in_channels(self) -> int:
        return self.input_shape[0]

    @property
    def in_memory(self) -> bool:
        """Whether both splits are tensors in memory (else images are read from files as they are needed)."""
        return isinstance(self.train, TensorSplit) and isinstance(self.val, TensorSplit)

    def _tensors(self, split: Split) -> TensorSplit:
        if not isinstance(split, TensorSplit):
            raise TypeError(f"{self.name} is read from files batch by batch; use its splits' batches()")
        return split

    # The in-memory splits' tensors, for code and tests that hold a small dataset whole.
    @property
    def x_train(self) -> torch.Tensor:
        return self._tensors(self.train).x

    @property
    def y_train(self) -> torch.Tensor:
        return self.train.labels

    @property
    def x_val(self) -> torch.Tensor:
        return self._tensors(self.val).x

    @property
    def y_val(self) -> torch.Tensor:
        return self.val.labels

    @classmethod
    def from_tensors(
        cls,
        name: str,
        x_train: torch.Tensor,
        y_train: torch.Tensor,
        x_val: torch.Tensor,
        y_val: torch.Tensor,
        num_classes: int,
        classes: tuple[str, ...] = (),
        *,
        mean: tuple[float, ...] = (),
        std: tuple[float, ...] = (),
    ) -> Dataset:
        """An in-memory dataset from normalised tensors (N, C, H, W) and labels (N,)."""
        train, val = TensorSplit(x_train, y_train), TensorSplit(x_val, y_val)
        return cls(name, train, val, num_classes, classes, mean, std)


def with_channels(data: Dataset, channels: int) -> Dataset:
    """``data`` with ``channels`` channels: unchanged, or grey images repeated (1 -> 3)."""
    if data.in_channels == channels:
        return data
    if data.in_channels != 1:
        raise ValueError(f"cannot turn {data.in_channels}-channel images into {channels}-channel ones")
    if data.in_memory:
        train: Split = TensorSplit(data.x_train.expand(-1, channels, -1, -1).contiguous(), data.y_train)
        val: Split = TensorSplit(data.x_val.expand(-1, channels, -1, -1).contiguous(), data.y_val)
    else:
        train, val = (s.with_channels(channels) for s in (data.train, data.val))  # type: ignore[attr-defined]
    return replace(data, train=train, val=val, mean=data.mean * channels, std=data.std * channels)


def _stratified_split(y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(SPLIT_SEED)
    train, val = [], []
    for label in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == label))
        n_val = max(1, round(len(idx) * VAL_FRACTION))
        val.append(idx[:n_val])
        train.append(idx[n_val:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(val))


def _in_memory(
    name: str,
    x_train: torch.Tensor,
    y_train: torch.Tensor,
    x_val: torch.Tensor,
    y_val: torch.Tensor,
    classes: tuple[str, ...],
) -> Dataset:
    """A dataset of images (N, C, H, W) float32 in [0, 1], normalised per channel with the training split's
    mean and standard deviation (``load_dataset`` applies the user's instead when given). In place: CIFAR's
    training split alone is 600 MB as float32."""
    mean = x_train.mean(dim=(0, 2, 3), keepdim=True)
    std = x_train.std(dim=(0, 2, 3), keepdim=True).clamp_min(1e-6)
    x_train.sub_(mean).div_(std)
    x_val.sub_(mean).div_(std)
    m, s = tuple(float(v) for v in mean.flatten()), tuple(float(v) for v in std.flatten())
    return Dataset.from_tensors(name, x_train, y_train, x_val, y_val, len(classes), classes, mean=m, std=s)


def _split(name: str, x: torch.Tensor, y: np.ndarray, classes: tuple[str, ...]) -> Dataset:
    """The fixed stratified split of ``x`` (N, C, H, W) float32 in [0, 1] and labels ``y`` (N,)."""
    tr, va = _stratified_split(y)
    labels = torch.from_numpy(y.astype(np.int64))
    return _in_memory(name, x[tr], labels[tr], x[va], labels[va], classes)


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
    name: str,
    data_dir: str | os.PathLike[str] | None = None,
    input_size: tuple[int, int] | None = None,
    *,
    mean: tuple[float, ...] | None = None,
    std: tuple[float, ...] | None = None,
    workers: int | None = None,
) -> Dataset:
    """Load a dataset by name, from ``data_dir`` for those that are not built in, at ``input_size`` (H, W)
    pixels, or at its natural size when None.

    ``mean`` and ``std`` (per channel, or one value for all; both or neither)
    replace the default normalisation: the training split's statistics for
    the datasets held in memory, ImageNet's for image folders. ``workers`` is
    how many processes read an image folder's files (default ``LOADER_WORKERS``).
    Unknown names, a missing ``data_dir`` where one is needed and files not
    in the expected layout raise ``UserError`` naming the file and the layout.
    """
    if name not in _LOADERS:
        raise UserError(f"unknown dataset {name!r}; available: {', '.join(available_datasets())}")
    data = _LOADERS[name](None if data_dir is None else Path(data_dir).expanduser())
    if input_size is not None:
        data = resize(data, input_size)
    if mean is not None or std is not None:
        data = normalised(data, mean, std)
    if workers is not None and not data.in_memory:
        data = _streamed(data, workers=max(0, workers))
    return data


def _streamed(data: Dataset, **changes: object) -> Dataset:
    """``data``, read from files, with ``changes`` made to how both splits read them."""
    return replace(data, train=replace(data.train, **changes), val=replace(data.val, **changes))  # type: ignore[type-var]


def parse_stats(text: str, flag: str) -> tuple[float, ...]:
    """``--mean`` / ``--std``: one number, or one per channel, separated by commas."""
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if not values or not all(np.isfinite(values)):
        raise UserError(f"{flag} {text}: give one number, or one per channel separated by commas (0.485,0.456,0.406)")
    return values


def normalised(data: Dataset, mean: tuple[float, ...] | None, std: tuple[float, ...] | None) -> Dataset:
    """``data`` normalised with ``mean`` and ``std`` (pixels in [0, 1]) instead of its default."""
    if mean is None or std is None:
        raise UserError("--mean and --std go together: give both (the normalisation your weights were trained with)")
    c = data.in_channels
    for flag, values in (("--mean", mean), ("--std", std)):
        if len(values) not in (1, c):
            either = f"1 or {c}" if c > 1 else "1"
            raise UserError(f"{flag}: {len(values)} values for {data.name}'s {c}-channel images; give {either}")
    mean, std = (mean * c if len(mean) == 1 else mean), (std * c if len(std) == 1 else std)
    if min(std) <= 0:
        raise UserError(f"--std {','.join(map(str, std))}: every standard deviation must be above 0")
    if not data.in_memory:
        return replace(_streamed(data, mean=mean, std=std), mean=mean, std=std)
    # x = (p - m0) / s0 now; the user's normalisation wants (p - m) / s = (x * s0 + m0 - m) / s.
    m0, s0 = (torch.tensor(v).view(1, -1, 1, 1) for v in (data.mean, data.std))
    m, s = (torch.tensor(v).view(1, -1, 1, 1) for v in (mean, std))

    def again(x: torch.Tensor) -> torch.Tensor:
        return x.mul_(s0).add_(m0 - m).div_(s)

    train, val = TensorSplit(again(data.x_train), data.y_train), TensorSplit(again(data.x_val), data.y_val)
    return replace(data, train=train, val=val, mean=mean, std=std)


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
    if not data.in_memory:
        return _streamed(data, size=size)
    pixels = (len(data.train) + len(data.val)) * data.in_channels * size[0] * size[1]
    if pixels * 4 > MAX_IN_MEMORY_BYTES:
        raise UserError(
            f"--input-size {size[0]}x{size[1]}: {data.name} is held in memory, and at that size it would take "
            f"{pixels * 4 / 2**30:.1f} GiB (the limit is {MAX_IN_MEMORY_BYTES / 2**30:.0f} GiB)"
        )

    def scale(x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)

    train, val = TensorSplit(scale(data.x_train), data.y_train), TensorSplit(scale(data.x_val), data.y_val)
    return replace(data, train=train, val=val)
