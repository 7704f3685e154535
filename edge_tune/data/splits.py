"""A dataset's splits: images and labels in batches, held in memory (``TensorSplit``) or read from files
(``data.imagefolder.FolderSplit``), and ``Chunks``, a split as the device evaluates it."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["Chunks", "Split", "TensorSplit"]


class Split(Protocol):
    """One split of a dataset: its labels, and its images in batches, held in memory or read from files."""

    @property
    def labels(self) -> torch.Tensor:  # (N,) int64
        ...

    @property
    def image_shape(self) -> tuple[int, int, int]:  # (C, H, W) of one image as the model receives it
        ...

    def __len__(self) -> int: ...

    def batches(
        self, batch_size: int, shuffle: torch.Generator | None = None, augment: bool = False
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(images (B, C, H, W) float32 normalised, labels (B,)); in a random order drawn from ``shuffle``
        when given, augmented for training when ``augment``."""
        ...

    def images(self, indices: Sequence[int]) -> torch.Tensor:
        """The images at ``indices`` (N, C, H, W) as evaluation sees them (not augmented)."""
        ...


def _translate(x: torch.Tensor, gen: torch.Generator, pad: int = 2) -> torch.Tensor:
    # Random translation by up to `pad` pixels, the CIFAR pad-and-crop recipe.
    n, _, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))
    offs = torch.randint(0, 2 * pad + 1, (n, 2), generator=gen)
    return torch.stack([padded[i, :, dy : dy + h, dx : dx + w] for i, (dy, dx) in enumerate(offs.tolist())])


@dataclass(frozen=True)
class TensorSplit:
    """A split held whole in memory: normalised images and labels."""

    x: torch.Tensor  # (N, C, H, W) float32, normalised
    y: torch.Tensor  # (N,) int64

    @property
    def labels(self) -> torch.Tensor:
        return self.y

    @property
    def image_shape(self) -> tuple[int, int, int]:
        c, h, w = self.x.shape[1:]
        return (int(c), int(h), int(w))

    def __len__(self) -> int:
        return len(self.y)

    def batches(
        self, batch_size: int, shuffle: torch.Generator | None = None, augment: bool = False
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        if shuffle is None:
            for i in range(0, len(self.y), batch_size):
                yield self.x[i : i + batch_size], self.y[i : i + batch_size]
            return
        order = torch.randperm(len(self.y), generator=shuffle)
        for i in range(0, len(order), batch_size):
            idx = order[i : i + batch_size]
            x = self.x[idx]
            yield (_translate(x, shuffle) if augment else x), self.y[idx]

    def images(self, indices: Sequence[int]) -> torch.Tensor:
        return self.x[torch.as_tensor(list(indices), dtype=torch.long)]


@dataclass(frozen=True)
class Chunks:
    """A split as NumPy chunks (images (B, C, H, W) float32, labels (B,)), read anew on each pass: what the
    device evaluates, without the split ever being held whole."""

    split: Split
    size: int = 256

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for x, y in self.split.batches(self.size):
            yield x.numpy(), y.numpy()
