"""A cheap accuracy proxy: top-1 of a pruned network after re-estimating its batch norms, without training.

Pruning filters changes the statistics every later batch norm sees, so the
pruned network's running means and variances are stale and its top-1 right
after pruning says little. Re-estimating them on a few hundred training
images (forward passes only, no gradient) gives a top-1 that tracks the
fine-tuned one (EagleEye, ECCV 2020, calls it adaptive batch-norm). Here:
every batch norm's statistics are reset and recomputed as an exact average
over ``images`` training images (``momentum=None``), not augmented, in a
seeded order; the weights are untouched; top-1 is on the validation split,
or on ``validation_sample`` of it: a fixed, class-stratified subset that
every candidate of a screen is scored on, so that a large validation split
(Fashion-MNIST's 10,000 images) does not make each candidate cost seconds.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from edge_tune.data import Dataset, Split
from edge_tune.train import evaluate

__all__ = ["SampledSplit", "proxy_top1", "recalibrate_batchnorm", "validation_sample"]


def recalibrate_batchnorm(model: nn.Module, batches: Iterable[torch.Tensor]) -> int:
    """Recompute every batch norm's running statistics over ``batches`` (an exact average); returns the
    number of images seen. The model is left in eval mode, its weights as they were."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average: the mean over all batches, whatever their number
    model.train()
    seen = 0
    with torch.no_grad():
        for x in batches:
            model(x)
            seen += len(x)
    for m, momentum in zip(norms, momenta, strict=True):
        m.momentum = momentum
    model.eval()
    return seen


@dataclass(frozen=True)
class SampledSplit:
    """Some images of a split, by index, read from it batch by batch in index order (evaluation only)."""

    split: Split
    indices: tuple[int, ...]

    @property
    def labels(self) -> torch.Tensor:
        return self.split.labels[torch.as_tensor(self.indices, dtype=torch.long)]

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return self.split.image_shape

    def __len__(self) -> int:
        return len(self.indices)

    def batches(
        self, batch_size: int, shuffle: torch.Generator | None = None, augment: bool = False
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        if shuffle is not None or augment:
            raise ValueError("a SampledSplit is for evaluation: no shuffling, no augmentation")
        labels = self.labels
        for i in range(0, len(self.indices), batch_size):
            yield self.split.images(self.indices[i : i + batch_size]), labels[i : i + batch_size]

    def images(self, indices: Sequence[int]) -> torch.Tensor:
        return self.split.images([self.indices[int(i)] for i in indices])


def validation_sample(split: Split, limit: int, seed: int = 0) -> Split:
    """``split`` itself when it holds at most ``limit`` images, else ``limit`` of them drawn per class in
    proportion to the class's share (at least one of each class), in a seeded order, kept in index order."""
    if len(split) <= limit:
        return split
    labels = split.labels
    gen = torch.Generator().manual_seed(seed)
    chosen: list[int] = []
    for c in torch.unique(labels).tolist():
        members = torch.nonzero(labels == c).flatten()
        take = max(1, round(limit * len(members) / len(labels)))
        chosen += members[torch.randperm(len(members), generator=gen)[:take]].tolist()
    return SampledSplit(split, tuple(sorted(chosen)))


def proxy_top1(
    model: nn.Module,
    data: Dataset,
    images: int = 512,
    batch_size: int = 64,
    seed: int = 0,
    val: Split | None = None,
) -> float:
    """Top-1 (%) on ``val`` (default: the validation split) of a copy of ``model`` whose batch norms were
    re-estimated on ``images`` training images."""
    calibrated = copy.deepcopy(model)
    shuffle = torch.Generator().manual_seed(seed)
    batches = (x for i, (x, _) in enumerate(data.train.batches(batch_size, shuffle)) if i * batch_size < images)
    recalibrate_batchnorm(calibrated, batches)
    return evaluate(calibrated, data.val if val is None else val).top1
