"""Image folders: one subfolder of images per class.

``imagefolder`` reads ``--data-dir/<class name>/<image files>`` (searched
recursively; hidden files and files of other kinds are skipped), classes
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

from edge_tune.data import IMAGE_SIZE, Dataset, _require_dir, _split
from edge_tune.errors import UserError

__all__ = ["IMAGE_SUFFIXES", "load_imagefolder"]

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"})


_IMAGEFOLDER_LAYOUT = (
    "a folder with one subfolder per class (at least 2), each holding at least 2 images "
    f"({', '.join(sorted(s[1:] for s in IMAGE_SUFFIXES))})"
)
_GREY_MODES = frozenset({"1", "L", "LA"})  # Pillow modes of greyscale images


def _image_files(root: Path) -> tuple[tuple[str, ...], list[Path], np.ndarray]:
    """Class names, image files and their labels (N,) of the tree at ``root``."""
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
        if len(found) < 2:
            raise UserError(
                f"class folder {root / name} holds {len(found)} image(s); each class needs at least 2, "
                f"one for training and one for validation; --data-dir should be {_IMAGEFOLDER_LAYOUT}"
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


def load_imagefolder(data_dir: Path | None) -> Dataset:
    root = _require_dir("imagefolder", data_dir, _IMAGEFOLDER_LAYOUT)
    classes, files, labels = _image_files(root)
    images, grey = zip(*(_read_image(f) for f in files), strict=True)
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2)  # (N, 3, 32, 32) uint8
    if all(grey):
        x = x[:, :1]  # (N, 1, 32, 32): a grey image converted to RGB repeats itself on each channel
    return _split("imagefolder", x.contiguous().float().div_(255.0), labels, classes)
