"""``CompressionScheduler``: a Distiller schedule run during fine-tuning.

At the start of each epoch the pruner and extension policies that fire act
in declaration order (Distiller's rule): a pruner masks its weights to the
sparsity its policy gives for that epoch (``agp_target``: fixed, or AGP's
cubic ramp), and ``net_thinner`` removes the masked filters or channels
physically. Masks are re-applied after every optimizer step. When thinning
changes the parameters, the optimizer is rebuilt (its momentum is lost,
the learning rate carries over) and the lr schedulers are moved to it.
Whatever structured mask no thinner removed is removed at ``finish``: the
exported model is always the physically smaller network.

Latency depends only on the final architecture, which the schedule fixes in
advance (a structured pruner's last step reaches its final sparsity, rounded
down as in Distiller), so ``planned_model`` builds it at once for the device
to measure while fine-tuning runs.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
from torch import nn

from edge_tune.compression.lr import ScheduledLR
from edge_tune.compression.pruning import Pruner, PruneReport, apply_pruners, count_macs_params
from edge_tune.compression.schedule import THINNERS, Schedule, agp_target

__all__ = ["CompressionScheduler"]

OptimizerFactory = Callable[[nn.Module], torch.optim.Optimizer]


class CompressionScheduler:
    """Drive ``schedule`` on ``model`` through ``fine_tune``'s hooks."""

    def __init__(
        self, model: nn.Module, schedule: Schedule, example: torch.Tensor, make_optimizer: OptimizerFactory
    ) -> None:
        self.model, self.schedule, self.example = model, schedule, example  # example: (1, C, H, W)
        self.macs_before, self.params_before = count_macs_params(model, example)
        self.pruner = Pruner(model, example)
        self.lr = ScheduledLR(schedule)
        self._make_optimizer = make_optimizer
        self._hooked: set[int] = set()

    def planned_model(self) -> tuple[nn.Module, PruneReport]:
        """A copy of the model pruned at once to the schedule's final architecture."""
        planned = copy.deepcopy(self.model)
        return planned, apply_pruners(planned, self.schedule.structured_final(), self.example)

    def on_epoch_start(self, epoch: int, opt: torch.optim.Optimizer) -> torch.optim.Optimizer | None:
        """Fire the epoch's pruners and thinners; returns a new optimizer if the parameters changed."""
        changed = False
        for policy in self.schedule.events_at(epoch):
            if policy.kind == "pruner":
                spec = self.schedule.pruners[policy.instance]
                self.pruner.prune(spec, agp_target(spec, policy, epoch))
            else:
                changed |= self.pruner.thin(THINNERS[self.schedule.extensions[policy.instance]])
        new = None
        if changed:
            new = self._make_optimizer(self.model)
            for group, old in zip(new.param_groups, opt.param_groups, strict=True):
                group["lr"] = old["lr"]
                group.setdefault("initial_lr", old.get("initial_lr", old["lr"]))
            self.lr.rebind(new)
            opt = new
        self.lr.on_epoch_start(epoch, opt)
        if id(opt) not in self._hooked:
            opt.register_step_post_hook(lambda *_: self.pruner.apply_masks())
            self._hooked.add(id(opt))
        return new

    def on_epoch_end(self, epoch: int) -> None:
        self.lr.on_epoch_end(epoch)

    def finish(self) -> PruneReport:
        """Thin what is still masked; the report compares the final model with the one given."""
        self.pruner.thin()
        self.pruner.apply_masks()
        macs, params = count_macs_params(self.model, self.example)
        return PruneReport(
            tuple(self.pruner.thinned), self.macs_before, macs, self.params_before, params, self.pruner.zeros()
        )
