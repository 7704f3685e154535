"""Training, fine-tuning and evaluation."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from edge_tune.data import Dataset
from edge_tune.models import device_of

__all__ = ["Accuracy", "TrainConfig", "evaluate", "fine_tune", "make_optimizer", "train_epoch"]


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 15  # passes over the training split
    lr: float = 0.1  # initial SGD learning rate
    momentum: float = 0.9  # SGD momentum
    weight_decay: float = 5e-4  # L2 penalty
    batch_size: int = 64  # images per step
    augment: bool = True  # random 2-pixel translations of training images
    seed: int = 0  # weight init, batch order, augmentation


@dataclass(frozen=True)
class Accuracy:
    top1: float  # percent
    top5: float  # percent


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 256) -> Accuracy:
    """Top-1 and top-5 accuracy of ``model`` in eval mode, in percent."""
    model.eval()
    dev = device_of(model)  # the data stay on the CPU and go there batch by batch
    correct1 = correct5 = 0
    for i in range(0, len(x), batch_size):
        logits = model(x[i : i + batch_size].to(dev))  # (B, classes)
        k = min(5, logits.shape[1])
        topk = logits.topk(k, dim=1).indices  # (B, k)
        target = y[i : i + batch_size].to(dev).unsqueeze(1)
        correct1 += int((topk[:, :1] == target).sum())
        correct5 += int((topk == target).any(dim=1).sum())
    return Accuracy(100.0 * correct1 / len(x), 100.0 * correct5 / len(x))


def _augment(x: torch.Tensor, gen: torch.Generator, pad: int = 2) -> torch.Tensor:
    # Random translation by up to `pad` pixels, the CIFAR pad-and-crop recipe.
    n, _, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))
    offs = torch.randint(0, 2 * pad + 1, (n, 2), generator=gen)
    return torch.stack([padded[i, :, dy : dy + h, dx : dx + w] for i, (dy, dx) in enumerate(offs.tolist())])


def train_epoch(
    model: nn.Module, opt: torch.optim.Optimizer, data: Dataset, cfg: TrainConfig, gen: torch.Generator
) -> float:
    """One pass over the training split; returns the mean loss.

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
    order = torch.randperm(len(data.x_train), generator=gen)
    total, steps = 0.0, 0
    for i in range(0, len(order), cfg.batch_size):
        idx = order[i : i + cfg.batch_size]
        x = data.x_train[idx]
        if cfg.augment:
            x = _augment(x, gen)
        x = x.to(dev, non_blocking=True)  # (B, C, H, W)
        if cuda:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device_type=dev.type, dtype=torch.float16, enabled=cuda):
            loss = F.cross_entropy(model(x), data.y_train[idx].to(dev))
        if not torch.isfinite(loss):
            raise FloatingPointError(f"training loss is {loss.item()} at step {steps}")
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
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
) -> Accuracy:
    """Train ``model`` in place for ``cfg.epochs``; returns the final validation accuracy.

    ``on_epoch_start(epoch, optimizer)`` is where a compression schedule acts
    (pruning steps, learning-rate changes); it returns a new optimizer when
    thinning replaced the model's parameters. ``on_epoch_end`` sees the epoch's
    loss and validation accuracy (for reporting to Ray Tune).
    """
    gen = torch.Generator().manual_seed(cfg.seed)
    opt: torch.optim.Optimizer = make_optimizer(model, cfg)
    acc = evaluate(model, data.x_val, data.y_val)
    for epoch in range(cfg.epochs):
        if on_epoch_start is not None:
            opt = on_epoch_start(epoch, opt) or opt
        loss = train_epoch(model, opt, data, cfg, gen)
        acc = evaluate(model, data.x_val, data.y_val)
        if on_epoch_end is not None:
            on_epoch_end(epoch, loss, acc)
    return acc
