"""Image folders: one subfolder of images per class.

``imagefolder`` reads ``--data-dir/train/<class name>/<image files>`` and
``--data-dir/val/<class name>/<image files>``, the convention of torchvision's
ImageFolder and of most training scripts, using the split as given; or, when
there is no ``train/`` and ``val/``, ``--data-dir/<class name>/<image files>``
split like ``digits`` (fixed, stratified, 80/20). Files are searched
recursively; hidden files and files of other kinds are skipped; classes are
sorted by name. Each image is squashed to 32x32 (bilinear, aspect ratio not
kept, nothing cropped away). If every image is greyscale (Pillow modes
1, L, LA) the dataset has one channel, as ``digits`` has; otherwise every
image is converted to RGB (alpha dropped, grey images repeated over three
channels). It is split like ``digits``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from edge_tune.data import IMAGE_SIZE, Dataset, _normalise, _require_dir, _split
from edge_tune.errors import UserError

__all__ = ["IMAGE_SUFFIXES", "load_imagefolder"]

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


def _read_image(path: Path) -> tuple[np.ndarray, bool]:
    """The image at ``path`` as (32, 32, 3) uint8 RGB, and whether the file is greyscale."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            grey = im.mode in _GREY_MODES
            rgb = im.convert("RGB").resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BILINEAR)
    except Exception as e:  # truncated, not an image, or a format Pillow lacks
        reason = str(e).rstrip(".")
        raise UserError(
            f"cannot read image {path}: {reason}; remove or replace it (imagefolder reads what Pillow opens)"
        ) from e
    return np.asarray(rgb, dtype=np.uint8), grey


def _read_images(files: list[Path]) -> tuple[torch.Tensor, bool]:
    """(N, 3, 32, 32) float32 in [0, 1], and whether every file is greyscale."""
    images, grey = zip(*(_read_image(f) for f in files), strict=True)
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous().float().div_(255.0), all(grey)


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
    (x_train, grey_train), (x_val, grey_val) = _read_images(train_files), _read_images(val_files)
    if grey_train and grey_val:  # a grey image converted to RGB repeats itself on each channel
        x_train, x_val = x_train[:, :1].contiguous(), x_val[:, :1].contiguous()
    x_train, x_val = _normalise(x_train, x_val)
    labels = torch.from_numpy(y_train), torch.from_numpy(y_val)
    return Dataset("imagefolder", x_train, labels[0], x_val, labels[1], num_classes=len(classes), classes=classes)


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
    x, grey = _read_images(files)  # (N, 3, 32, 32)
    return _split("imagefolder", x[:, :1].contiguous() if grey else x, labels, classes)
