"""``CompressionScheduler``: a Distiller schedule run during fine-tuning.

At the start of each epoch the pruner and extension policies that fire act
in declaration order (Distiller's rule): a pruner masks its weights to the
sparsity its policy gives for that epoch (``agp_target``: fixed, or AGP's
cubic ramp), and ``net_thinner`` removes the masked filters or channels
physically. An activation-ranked pruner first records its layers' feature
maps on training batches. Regularizers whose policies fire add their penalty
to each step's loss and threshold their groups after each step. Masks are
re-applied after every optimizer step. When thinning changes the
parameters, the optimizer is rebuilt (its momentum is lost, the learning
rate carries over) and the lr schedulers are moved to it. Whatever
structured mask no thinner removed is removed at ``finish``: the exported
model is always the physically smaller network.

Latency depends only on the final architecture, which a schedule of pruners
fixes in advance (a structured pruner's last step reaches its final
sparsity, rounded down as in Distiller), so ``planned_model`` builds it at
once for the device to measure while fine-tuning runs. A schedule with
regularizers has no plan: training decides which structures reach zero.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable

import torch
from torch import nn

from edge_tune.compression.lr import ScheduledLR
from edge_tune.compression.pruning import Pruner, PruneReport, apply_pruners, count_macs_params, resolve_weights
from edge_tune.compression.regularize import Regularization
from edge_tune.compression.schedule import PrunerSpec, Schedule, agp_target

__all__ = ["CompressionScheduler"]

OptimizerFactory = Callable[[nn.Module], torch.optim.Optimizer]
Batches = Callable[[], Iterable[torch.Tensor]]  # training images (B, C, H, W) for recording activations


class CompressionScheduler:
    """Drive ``schedule`` on ``model`` through ``fine_tune``'s hooks."""

    def __init__(
        self,
        model: nn.Module,
        schedule: Schedule,
        example: torch.Tensor,
        make_optimizer: OptimizerFactory,
        activation_batches: Batches | None = None,
    ) -> None:
        self.model, self.schedule, self.example = model, schedule, example  # example: (1, C, H, W)
        self.macs_before, self.params_before = count_macs_params(model, example)
        self.pruner = Pruner(model, example)
        self.lr = ScheduledLR(schedule)
        self.regularization = Regularization(model, schedule.regularizers)
        self._make_optimizer = make_optimizer
        self._activation_batches = activation_batches
        self._hooked: set[int] = set()
        self._regularizing: list = []  # (spec, policy) of the regularizers firing this epoch

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
                if spec.needs_activations:
                    self._record(spec)
                self.pruner.prune(spec, agp_target(spec, policy, epoch), policy.fold_batchnorm)
            else:
                thinner = self.schedule.extensions[policy.instance]
                changed |= self.pruner.thin(thinner.group_type)
                if not self.schedule.planned:  # what the regularizers drove to zero
                    changed |= self.pruner.thin_zeros(thinner.group_type, thinner.name)
        self._regularizing = self.schedule.regularizers_at(epoch)
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
            opt.register_step_post_hook(lambda *_: self._after_step())
            self._hooked.add(id(opt))
        return new

    def _record(self, spec: PrunerSpec) -> None:
        if self._activation_batches is None:
            raise ValueError(f"schedule.pruners.{spec.name}: {spec.cls} needs training batches to rank filters")
        layers = resolve_weights(self.model, spec.weights, f"schedule.pruners.{spec.name}.weights")
        self.pruner.record_activations([n for n, _ in layers], self._activation_batches())

    def regularizer_loss(self) -> torch.Tensor | None:
        """This epoch's regularizers' penalty, to add to each step's loss (None when none fires)."""
        return self.regularization.loss(self._regularizing) if self._regularizing else None

    def _after_step(self) -> None:
        if self._regularizing:
            self.regularization.threshold(self._regularizing)
        self.pruner.apply_masks()

    def on_epoch_end(self, epoch: int) -> None:
        self.lr.on_epoch_end(epoch)
        for spec, policy in self._regularizing:
            if policy.keep_mask and policy.bounded and epoch == policy.last():  # the zeros stay zeros
                for module, pname, keep in self.regularization.threshold([(spec, policy)]):
                    self.pruner.add_mask(f"{spec.name}:kept", module, pname, keep)

    def finish(self) -> PruneReport:
        """Thin what is still masked (and, after regularizers, what is zero); the report compares the
        final model with the one given."""
        self.pruner.thin()
        groups = {g for spec in self.schedule.regularizers.values() for _, _, g in spec.regims}
        for group_type in sorted(groups & {"Filters", "Channels"}):
            self.pruner.thin_zeros(group_type, "regularizers")
        self.pruner.apply_masks()
        macs, params = count_macs_params(self.model, self.example)
        return PruneReport(
            tuple(self.pruner.thinned), self.macs_before, macs, self.params_before, params, self.pruner.zeros()
        )
