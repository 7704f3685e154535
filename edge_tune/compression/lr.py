"""The schedule's ``lr_schedulers``, stepped when their policies fire."""

from __future__ import annotations

from typing import Any

import torch

from edge_tune.compression.schedule import Schedule

__all__ = ["ScheduledLR"]


class ScheduledLR:
    """Creates each scheduler on the fine-tuning optimizer and steps it at epoch ends.

    As in Distiller, a scheduler's policy says at which epochs it steps
    (``starting_epoch``/``ending_epoch``/``frequency`` or ``epochs``).
    """

    def __init__(self, schedule: Schedule) -> None:
        self.schedule = schedule
        self._live: dict[str, Any] = {}

    def on_epoch_start(self, epoch: int, opt: torch.optim.Optimizer) -> None:
        if not self._live:
            for name, spec in self.schedule.lr_schedulers.items():
                cls = getattr(torch.optim.lr_scheduler, spec.cls)
                try:
                    self._live[name] = cls(opt, **spec.kwargs)
                except TypeError as exc:
                    raise ValueError(f"schedule.lr_schedulers.{name}: {exc}") from exc

    def rebind(self, opt: torch.optim.Optimizer) -> None:
        """Move the live schedulers to a new optimizer (after thinning rebuilt it)."""
        for sched in self._live.values():
            sched.optimizer = opt

    def on_epoch_end(self, epoch: int) -> None:
        for policy in self.schedule.policies:
            if policy.kind == "lr_scheduler" and policy.fires(epoch):
                self._live[policy.instance].step()
