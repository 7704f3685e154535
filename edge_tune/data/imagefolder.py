"""Image folders: one subfolder of images per class, read from disk batch by batch.

``imagefolder`` reads ``--data-dir/train/<class name>/<image files>`` and
``--data-dir/val/<class name>/<image files>``, the convention of torchvision's
ImageFolder and of most training scripts, using the split as given; or, when
there is no ``train/`` and ``val/``, ``--data-dir/<class name>/<image files>``
split like ``digits`` (fixed, stratified, 80/20). Files are searched
recursively; hidden files and files of other kinds are skipped; classes are
sorted by name.

Nothing is held in memory but the file names: a torch ``DataLoader`` with
``workers`` processes decodes each batch as it is needed, for training and
for evaluation alike, so memory stays flat however large the folder is. The
transforms are the ImageNet recipe's, at ``size`` (224x224 unless
``--input-size`` says otherwise): training takes a random crop of 8-100 % of
the image's area at an aspect ratio of 3/4-4/3, resized to ``size``, flipped
left-right half the time; evaluation resizes the image so that it covers
``size`` / 0.875 (256 for 224) and takes the centre crop. Pixels in [0, 1] are
normalised with ImageNet's mean and standard deviation (their average over the
channels for grey images) unless ``--mean``/``--std`` say otherwise. Each
image's augmentation is drawn from the epoch's seed and the image's index, so
a training run is the same whatever the number of workers. If every image is
greyscale (Pillow modes 1, L, LA) the dataset has one channel, as ``digits``
has; otherwise every image is converted to RGB (alpha dropped, grey images
repeated over three channels). Only the files' headers are read when the
folder is loaded (for the modes, and to name an unreadable file early).
"""

from __future__ import annotations

import math
import os
import signal
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.utils.data

from edge_tune.data import Dataset, _require_dir, _stratified_split
from edge_tune.errors import UserError

__all__ = ["FOLDER_SIZE", "IMAGE_SUFFIXES", "LOADER_WORKERS", "FolderSplit", "load_imagefolder"]

FOLDER_SIZE = (224, 224)  # the natural input of an image folder: ImageNet's
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
GREY_MEAN, GREY_STD = (0.449,), (0.226,)  # ImageNet's, averaged over its three channels
CROP_FRACTION = 0.875  # evaluation: resize to cover size / 0.875, then the centre crop (256 -> 224)
CROP_SCALE, CROP_RATIO = (0.08, 1.0), (3 / 4, 4 / 3)  # training's random crop: area fraction, aspect ratio
LOADER_WORKERS = min(4, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"})


_IMAGEFOLDER_LAYOUT = (
    "a folder with train/ and val/, or none, holding one subfolder per class (at least 2), each with images "
    f"({', '.join(sorted(s[1:] for s in IMAGE_SUFFIXES))})"
)
_GREY_MODES = frozenset({"1", "L", "LA"})  # Pillow modes of greyscale images


def _image_files(root: Path, least: int = 2) -> tuple[tuple[str, ...], list[Path], np.ndarray]:
    """Class names, image files and their labels (N,) of the tree at ``root``; ``least`` images per class."""
    classes = tuple(sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")))
    if len(classes) < 2:
        raise UserError(f"--data-dir {root} holds {len(classes)} class folder(s); it should be {_IMAGEFOLDER_LAYOUT}")
    files: list[Path] = []
    labels: list[int] = []
    for label, name in enumerate(classes):
        found = sorted(
            p
            for p in (root / name).rglob("*")
            if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".") and p.is_file()
        )
        if len(found) < least:
            why = ", one for training and one for validation" if least == 2 else ""
            raise UserError(
                f"class folder {root / name} holds {len(found)} image(s); each class needs at least {least}{why}; "
                f"--data-dir should be {_IMAGEFOLDER_LAYOUT}"
            )
        files += found
        labels += [label] * len(found)
    return classes, files, np.asarray(labels, dtype=np.int64)


def _unreadable(path: Path | str, e: Exception) -> UserError:
    """The one message for an image Pillow cannot read, when the folder loads or when a worker decodes it."""
    reason = str(e).rstrip(".")
    return UserError(f"cannot read image {path}: {reason}; remove or replace it (imagefolder reads what Pillow opens)")


def _modes(files: Sequence[Path]) -> bool:
    """Whether every file is greyscale; reads only the headers, and names a file Pillow cannot open."""
    from PIL import Image

    grey = True
    for path in files:
        try:
            with Image.open(path) as im:
                grey = grey and im.mode in _GREY_MODES
        except Exception as e:  # not an image, or a format Pillow lacks
            raise _unreadable(path, e) from e
    return grey


def _random_crop(w: int, h: int, rng: np.random.Generator) -> tuple[int, int, int, int]:
    """(left, top, width, height) of training's random crop of a ``w`` x ``h`` image."""
    area = w * h
    for _ in range(10):
        target = area * rng.uniform(*CROP_SCALE)
        aspect = math.exp(rng.uniform(math.log(CROP_RATIO[0]), math.log(CROP_RATIO[1])))
        cw, ch = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
        if 0 < cw <= w and 0 < ch <= h:
            return int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1)), cw, ch
    # No draw fits (a very long image): the centre, at the nearest allowed aspect ratio.
    ratio = w / h
    if ratio < CROP_RATIO[0]:
        cw, ch = w, round(w / CROP_RATIO[0])
    elif ratio > CROP_RATIO[1]:
        cw, ch = round(h * CROP_RATIO[1]), h
    else:
        cw, ch = w, h
    return (w - cw) // 2, (h - ch) // 2, cw, ch


@dataclass(frozen=True)
class FolderSplit:
    """A split read from image files batch by batch; only the file names and labels are held."""

    files: tuple[str, ...]
    y: torch.Tensor  # (N,) int64
    grey: bool  # every file is greyscale: read as one channel
    channels: int  # what the model receives: 1 (grey), 3 (RGB, or grey repeated)
    size: tuple[int, int] = FOLDER_SIZE  # (H, W)
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    workers: int = LOADER_WORKERS

    @property
    def labels(self) -> torch.Tensor:
        return self.y

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return (self.channels, *self.size)

    def __len__(self) -> int:
        return len(self.files)

    def with_channels(self, channels: int) -> FolderSplit:
        return replace(self, channels=channels)

    def load(self, index: int, train: bool = False, seed: int = 0) -> torch.Tensor:
        """Image ``index`` (C, H, W) float32, normalised; augmented from (``seed``, ``index``) when ``train``."""
        try:
            return self._load(index, train, seed)
        except Exception as e:  # truncated past its header, or unreadable since the folder was listed
            raise _unreadable(self.files[index], e) from None

    def _load(self, index: int, train: bool, seed: int) -> torch.Tensor:
        from PIL import Image

        h, w = self.size
        with Image.open(self.files[index]) as f:
            im = f.convert("L" if self.grey else "RGB")
            if train:
                rng = np.random.default_rng((seed, index))
                left, top, cw, ch = _random_crop(im.width, im.height, rng)
                im = im.resize((w, h), Image.Resampling.BILINEAR, box=(left, top, left + cw, top + ch))
                if rng.random() < 0.5:
                    im = im.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
            else:
                scale = max(h / CROP_FRACTION / im.height, w / CROP_FRACTION / im.width)
                rw, rh = max(w, round(im.width * scale)), max(h, round(im.height * scale))
                im = im.resize((rw, rh), Image.Resampling.BILINEAR)
                left, top = (rw - w) // 2, (rh - h) // 2
                im = im.crop((left, top, left + w, top + h))
            pixels = np.asarray(im, dtype=np.float32) / 255.0  # (H, W) or (H, W, 3)
        x = torch.from_numpy(pixels).unsqueeze(0) if pixels.ndim == 2 else torch.from_numpy(pixels).permute(2, 0, 1)
        if x.shape[0] != self.channels:  # grey files for a 3-channel model
            x = x.expand(self.channels, -1, -1)
        mean = torch.tensor(self.mean).view(-1, 1, 1)
        std = torch.tensor(self.std).view(-1, 1, 1)
        return ((x - mean) / std).contiguous()

    def batches(
        self, batch_size: int, shuffle: torch.Generator | None = None, augment: bool = False
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        seed = int(torch.randint(0, 2**31, (1,), generator=shuffle)) if shuffle is not None else 0
        order = torch.randperm(len(self), generator=shuffle).tolist() if shuffle is not None else range(len(self))
        loader = torch.utils.data.DataLoader(
            _Images(self, augment, seed),
            batch_size=batch_size,
            sampler=order,
            num_workers=self.workers,
            prefetch_factor=2 if self.workers else None,
        )
        previous = signal.getsignal(signal.SIGCHLD) if _main_thread() else None
        try:
            yield from loader
        except UserError as e:  # from a worker, the message comes back with the worker's traceback before it
            raise UserError(str(e).strip().splitlines()[-1].split("UserError: ", 1)[-1]) from None
        finally:
            if previous is not None and self.workers:
                _restore_sigchld(previous)

    def images(self, indices: Sequence[int]) -> torch.Tensor:
        return torch.stack([self.load(int(i)) for i in indices])


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def _restore_sigchld(previous: Any) -> None:
    """Put back the SIGCHLD handler that was there before a ``DataLoader`` with workers started.

    The ``DataLoader`` installs a Python SIGCHLD handler in the main thread (to notice a worker that
    died) and leaves it there for good, so every later child process that exits interrupts the main
    thread with a signal. In a process that had also run OpenVINO, on a CPU with AMX, that delivery
    failed: the kernel killed the process with SIGSEGV (``si_code`` SI_KERNEL, the main thread waiting
    in ``poll`` for a subprocess), and no Python handler ran. The handler is needed only while the
    workers live; torch is told to install it again for the next loader.
    """
    from torch.utils.data._utils import signal_handling

    signal.signal(signal.SIGCHLD, previous)
    signal_handling._SIGCHLD_handler_set = False


class _Images(torch.utils.data.Dataset[tuple[torch.Tensor, int]]):
    """A ``FolderSplit`` as the ``DataLoader``'s workers see it."""

    def __init__(self, split: FolderSplit, train: bool, seed: int) -> None:
        self.split, self.train, self.seed = split, train, seed

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.split.load(index, self.train, self.seed), int(self.split.y[index])


def _dataset(
    classes: tuple[str, ...], train: tuple[list[Path], np.ndarray], val: tuple[list[Path], np.ndarray]
) -> Dataset:
    grey = _modes([*train[0], *val[0]])
    mean, std = (GREY_MEAN, GREY_STD) if grey else (IMAGENET_MEAN, IMAGENET_STD)

    def split(files: list[Path], labels: np.ndarray) -> FolderSplit:
        names = tuple(str(f) for f in files)
        return FolderSplit(names, torch.from_numpy(labels), grey, 1 if grey else 3, mean=mean, std=std)

    return Dataset("imagefolder", split(*train), split(*val), len(classes), classes, mean=mean, std=std)


def _given_split(root: Path) -> Dataset:
    """``root/train`` and ``root/val``, used as given: the same classes in both."""
    classes, train_files, y_train = _image_files(root / "train", least=1)
    val_classes, val_files, y_val = _image_files(root / "val", least=1)
    if val_classes != classes:
        only_train = sorted(set(classes) - set(val_classes))
        only_val = sorted(set(val_classes) - set(classes))
        raise UserError(
            f"--data-dir {root}: train/ and val/ must hold the same class folders; only in train/: "
            f"{', '.join(only_train) or 'none'}; only in val/: {', '.join(only_val) or 'none'}"
        )
    return _dataset(classes, (train_files, y_train), (val_files, y_val))


def load_imagefolder(data_dir: Path | None) -> Dataset:
    root = _require_dir("imagefolder", data_dir, _IMAGEFOLDER_LAYOUT)
    has_train, has_val = (root / "train").is_dir(), (root / "val").is_dir()
    if has_train != has_val:
        there, missing = ("train", "val") if has_train else ("val", "train")
        raise UserError(
            f"--data-dir {root} has {there}/ but no {missing}/: a split of your own needs both, each with one "
            f"folder per class; without either, the class folders are split 80/20 here"
        )
    if has_train:
        return _given_split(root)
    classes, files, labels = _image_files(root)
    tr, va = _stratified_split(labels)
    return _dataset(classes, ([files[i] for i in tr], labels[tr]), ([files[i] for i in va], labels[va]))
