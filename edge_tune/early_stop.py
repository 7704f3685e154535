"""Early stopping that knows the accuracy threshold (``--early-stop threshold``, the default).

The rule. After fine-tuning epoch k of E (k < E), a trial is stopped when

    top1_k + max_recovery(k) + margin < threshold

where ``max_recovery(k)`` is the largest gain from epoch k to the end seen in
the trials that have finished (final top-1 minus top-1 after epoch k, PyTorch
figures both), and ``margin`` is 1 point by default. Until ``min_finished``
trials (3) have finished, nothing is stopped: there is no evidence yet of how
much fine-tuning recovers. A trial is stopped only when even the best recovery
any finished trial showed would leave it short: it targets trials that cannot
reach the threshold, never slow starters that can.

Why not ASHA (``--early-stop asha``, kept for comparison)? ASHA stops a trial
whose metric at a rung is not in the top 1/η of the trials seen at that rung.
Ranking by accuracy stops the heavily pruned trials, which are the fast ones
the search wants, however far above the threshold they end; ranking by score
needs latency, which is not there before fine-tuning ends. The threshold rule
stops only what is going to be infeasible. docs/benchmarks/search.md replays
both on the table of real trials.

A stopped trial leaves ``stopped_early.json`` in its folder, so the reason
survives ``--resume``; its results row says ``stopped``.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ray.tune.schedulers import FIFOScheduler, TrialScheduler

from edge_tune.errors import UserError
from edge_tune.outcome import TrialOutcome, finite

__all__ = ["EARLY_STOPPING", "STOPPED_FILE", "ThresholdStopping", "make_early_stopping", "threshold_rule"]

# --early-stop NAME -> a factory of Ray Tune schedulers from (threshold top-1 %, fine-tuning epochs)
EARLY_STOPPING: dict[str, Callable[[float, int], TrialScheduler]] = {}


def register(name: str) -> Callable[[Callable[[float, int], TrialScheduler]], Callable[[float, int], TrialScheduler]]:
    def add(factory: Callable[[float, int], TrialScheduler]) -> Callable[[float, int], TrialScheduler]:
        EARLY_STOPPING[name] = factory
        return factory

    return add


STOPPED_FILE = "stopped_early.json"


def threshold_rule(top1: float, recoveries: list[float], threshold: float, margin: float, min_finished: int) -> bool:
    """True when a trial at ``top1`` after some epoch should stop, given the recoveries seen from that epoch."""
    if len(recoveries) < min_finished:
        return False
    return top1 + max(recoveries) + margin < threshold


class ThresholdStopping(FIFOScheduler):
    def __init__(self, threshold: float, margin: float = 1.0, min_finished: int = 3) -> None:
        super().__init__()
        self.threshold, self.margin, self.min_finished = threshold, margin, min_finished
        self._curves: dict[str, dict[int, float]] = defaultdict(dict)  # trial -> epoch -> top1
        self._recoveries: dict[int, list[float]] = defaultdict(list)  # epoch -> final minus that epoch's top1
        self.stopped: dict[str, str] = {}  # trial -> reason

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict[str, Any]) -> str:
        o = TrialOutcome.from_dict(result)
        epoch, top1 = o.epoch, o.top1
        if o.final or epoch < 1 or not finite(top1):
            return TrialScheduler.CONTINUE
        self._curves[trial.trial_id][epoch] = top1
        if o.epochs and epoch >= o.epochs:
            return TrialScheduler.CONTINUE
        recoveries = self._recoveries[epoch]
        if not threshold_rule(top1, recoveries, self.threshold, self.margin, self.min_finished):
            return TrialScheduler.CONTINUE
        reason = (
            f"stopped after epoch {epoch}: top1 {top1:.2f}% + the best recovery seen from epoch {epoch} "
            f"({max(recoveries):.2f} points, over {len(recoveries)} finished trials) + margin {self.margin:g} "
            f"< threshold {self.threshold:.2f}%"
        )
        self.stopped[trial.trial_id] = reason
        _mark(trial, epoch, reason)
        return TrialScheduler.STOP

    def on_trial_complete(self, tune_controller: Any, trial: Any, result: dict[str, Any]) -> None:
        curve = self._curves.pop(trial.trial_id, {})
        o = TrialOutcome.from_dict(result)
        if o.final and finite(o.top1):
            for epoch, top1 in curve.items():
                self._recoveries[epoch].append(o.top1 - top1)

    def debug_string(self) -> str:
        return f"ThresholdStopping: {len(self.stopped)} stopped"


def _mark(trial: Any, epoch: Any, reason: str) -> None:
    try:
        Path(trial.local_path, STOPPED_FILE).write_text(json.dumps({"epoch": epoch, "reason": reason}))
    except OSError:
        pass  # the row then reads "no final result"; the search itself is unaffected


@register("threshold")
def _threshold(threshold: float, epochs: int) -> TrialScheduler:
    return ThresholdStopping(threshold)


@register("asha")
def _asha(threshold: float, epochs: int) -> TrialScheduler:
    """Ray's ASHA (rungs at epochs 1, 3, 9, ... up to the last; keeps the top third by top-1)."""
    from ray.tune.schedulers import AsyncHyperBandScheduler

    class ASHA(AsyncHyperBandScheduler):
        def on_trial_result(self, tune_controller: Any, trial: Any, result: dict[str, Any]) -> str:
            decision = super().on_trial_result(tune_controller, trial, result)
            o = TrialOutcome.from_dict(result)
            if decision == TrialScheduler.STOP and not o.final:
                _mark(trial, o.epoch, f"stopped by ASHA after epoch {o.epoch}")
            return decision

    return ASHA(time_attr="epoch", metric="top1", mode="max", max_t=max(epochs, 1), grace_period=1, reduction_factor=3)


@register("none")
def _none(threshold: float, epochs: int) -> TrialScheduler:
    return FIFOScheduler()


def make_early_stopping(kind: str, threshold: float, epochs: int) -> TrialScheduler:
    """The Tune scheduler for ``--early-stop``: ours, ASHA on top-1 by epoch, or none (FIFO)."""
    if kind not in EARLY_STOPPING:
        raise UserError(f"--early-stop {kind}: unknown; choose one of {', '.join(EARLY_STOPPING)}")
    return EARLY_STOPPING[kind](threshold, epochs)
