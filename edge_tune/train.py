"""Training, fine-tuning and evaluation."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from edge_tune.data import Dataset, Split
from edge_tune.models import device_of

__all__ = ["Accuracy", "TrainConfig", "evaluate", "fine_tune", "make_optimizer", "train_epoch"]


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 15  # passes over the training split
    lr: float = 0.1  # initial SGD learning rate
    momentum: float = 0.9  # SGD momentum
    weight_decay: float = 5e-4  # L2 penalty
    batch_size: int = 64  # images per step
    augment: bool = True  # in memory: random 2-pixel translations; image folders: random-resized crop and flip
    seed: int = 0  # weight init, batch order, augmentation


@dataclass(frozen=True)
class Accuracy:
    top1: float  # percent
    top5: float  # percent


@torch.no_grad()
def evaluate(model: nn.Module, split: Split, batch_size: int = 256) -> Accuracy:
    """Top-1 and top-5 accuracy of ``model`` in eval mode on ``split`` (e.g. ``data.val``), in percent."""
    model.eval()
    dev = device_of(model)  # the data stay on the CPU and go there batch by batch
    correct1 = correct5 = seen = 0
    for x, y in split.batches(batch_size):
        logits = model(x.to(dev))  # (B, classes)
        k = min(5, logits.shape[1])
        topk = logits.topk(k, dim=1).indices  # (B, k)
        target = y.to(dev).unsqueeze(1)
        correct1 += int((topk[:, :1] == target).sum())
        correct5 += int((topk == target).any(dim=1).sum())
        seen += len(y)
    return Accuracy(100.0 * correct1 / max(seen, 1), 100.0 * correct5 / max(seen, 1))


Penalty = Callable[[], "torch.Tensor | None"]  # a regularizer's term, added to each step's loss


def train_epoch(
    model: nn.Module,
    opt: torch.optim.Optimizer,
    data: Dataset,
    cfg: TrainConfig,
    gen: torch.Generator,
    penalty: Penalty | None = None,
) -> float:
    """One pass over the training split; returns the mean loss (cross-entropy, without ``penalty``).

    On a GPU the forward pass runs in mixed precision (float16 autocast, the
    loss scaled against underflow) on channels-last images, as GPU training
    recipes do; on the CPU everything stays float32. Evaluation is always
    float32. Raises ``FloatingPointError`` on a NaN or infinite loss, so the
    trial is recorded as errored instead of reporting garbage.
    """
    model.train()
    dev = device_of(model)
    cuda = dev.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=cuda)
    total, steps = 0.0, 0
    for x_cpu, y in data.train.batches(cfg.batch_size, shuffle=gen, augment=cfg.augment):
        x = x_cpu.to(dev, non_blocking=True)  # (B, C, H, W)
        if cuda:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device_type=dev.type, dtype=torch.float16, enabled=cuda):
            loss = F.cross_entropy(model(x), y.to(dev))
        if not torch.isfinite(loss):
            raise FloatingPointError(f"training loss is {loss.item()} at step {steps}")
        extra = penalty() if penalty is not None else None
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss if extra is None else loss + extra).backward()
        scaler.step(opt)  # skipped when the scaled gradients overflowed; the scale then shrinks
        scaler.update()
        total, steps = total + loss.item(), steps + 1
    return total / max(steps, 1)


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.SGD:
    return torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


EpochHook = Callable[[int, float, Accuracy], None]  # (epoch, mean loss, validation accuracy)


def fine_tune(
    model: nn.Module,
    data: Dataset,
    cfg: TrainConfig,
    *,
    on_epoch_start: Callable[[int, torch.optim.Optimizer], torch.optim.Optimizer | None] | None = None,
    on_epoch_end: EpochHook | None = None,
    penalty: Penalty | None = None,
) -> Accuracy:
    """Train ``model`` in place for ``cfg.epochs``; returns the final validation accuracy.

    ``on_epoch_start(epoch, optimizer)`` is where a compression schedule acts
    (pruning steps, learning-rate changes); it returns a new optimizer when
    thinning replaced the model's parameters. ``on_epoch_end`` sees the epoch's
    loss and validation accuracy (for reporting to Ray Tune). ``penalty`` is
    added to every step's loss (a schedule's regularizers).
    """
    gen = torch.Generator().manual_seed(cfg.seed)
    opt: torch.optim.Optimizer = make_optimizer(model, cfg)
    acc = evaluate(model, data.val)
    for epoch in range(cfg.epochs):
        if on_epoch_start is not None:
            opt = on_epoch_start(epoch, opt) or opt
        loss = train_epoch(model, opt, data, cfg, gen, penalty)
        acc = evaluate(model, data.val)
        if on_epoch_end is not None:
            on_epoch_end(epoch, loss, acc)
    return acc
