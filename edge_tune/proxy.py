"""A cheap accuracy proxy: top-1 of a pruned network after re-estimating its batch norms, without training.

Pruning filters changes the statistics every later batch norm sees, so the
pruned network's running means and variances are stale and its top-1 right
after pruning says little. Re-estimating them on a few hundred training
images (forward passes only, no gradient) gives a top-1 that tracks the
fine-tuned one (EagleEye, ECCV 2020, calls it adaptive batch-norm). Here:
every batch norm's statistics are reset and recomputed as an exact average
over ``images`` training images (``momentum=None``), not augmented, in a
seeded order; the weights are untouched; top-1 is on the validation split.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable

import torch
from torch import nn

from edge_tune.data import Dataset
from edge_tune.train import evaluate

__all__ = ["proxy_top1", "recalibrate_batchnorm"]


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


def proxy_top1(model: nn.Module, data: Dataset, images: int = 512, batch_size: int = 64, seed: int = 0) -> float:
    """Validation top-1 (%) of a copy of ``model`` whose batch norms were re-estimated on ``images`` training
    images."""
    calibrated = copy.deepcopy(model)
    shuffle = torch.Generator().manual_seed(seed)
    batches = (x for i, (x, _) in enumerate(data.train.batches(batch_size, shuffle)) if i * batch_size < images)
    recalibrate_batchnorm(calibrated, batches)
    return evaluate(calibrated, data.val).top1
