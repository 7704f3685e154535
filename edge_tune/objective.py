"""The search objective: accuracy and latency to a score and a constraint.

score      = ln(speedup) + accuracy_weight * (top1 - threshold) / 100
constraint = top1 - threshold          (feasible when >= 0)

``top1`` is the lower of the PyTorch and the on-device figure: what ships is
the compiled model, and both must clear the bar. ``ln(speedup)`` makes a 10%
latency cut worth the same at any scale; with the default weight of 1.0 one
accuracy point is worth about 1% of latency, so latency dominates and accuracy
breaks near-ties (ties inside the measurement's own noise). The threshold is a
constraint for the searcher, never folded into the score as a penalty.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from edge_tune.errors import UserError

__all__ = ["Objective", "Threshold", "parse_threshold"]

_NUMBER = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)$")


@dataclass(frozen=True)
class Threshold:
    """``97.5`` means top-1 >= 97.5%; ``-1.0`` means at most 1.0 point below the baseline."""

    value: float  # percent (absolute) or points (drop, stored positive)
    is_drop: bool

    def resolve(self, baseline_top1: float) -> float:
        return baseline_top1 - self.value if self.is_drop else self.value

    def __str__(self) -> str:
        return f"baseline - {self.value:g} points" if self.is_drop else f"{self.value:g}%"


def parse_threshold(text: str) -> Threshold:
    text = text.strip()
    if not _NUMBER.match(text):
        raise UserError(
            f"--accuracy-threshold {text!r}: expected a top-1 in percent (e.g. 97.5) "
            "or a drop from the baseline in points written with a minus sign (e.g. -1.0)"
        )
    value = float(text)
    if value < 0:
        return Threshold(-value, is_drop=True)
    if value > 100:
        raise UserError(f"--accuracy-threshold {text}: a top-1 above 100% cannot be reached")
    return Threshold(value, is_drop=False)


@dataclass(frozen=True)
class Objective:
    threshold: float  # top-1, percent, absolute
    accuracy_weight: float = 1.0  # score per 100 accuracy points, relative to ln(speedup)

    def constraint(self, top1: float) -> float:
        return top1 - self.threshold

    def feasible(self, top1: float) -> bool:
        return self.constraint(top1) >= 0

    def score(self, top1: float, speedup: float) -> float:
        if not (math.isfinite(top1) and math.isfinite(speedup)) or speedup <= 0:
            return math.nan
        return math.log(speedup) + self.accuracy_weight * (top1 - self.threshold) / 100.0


def check_reachable(threshold: float, baseline_top1: float, spec: Threshold) -> None:
    """A threshold above what the unpruned model scores cannot be met by pruning it."""
    if threshold > baseline_top1:
        raise UserError(
            f"--accuracy-threshold {spec}: unreachable, the baseline itself scores "
            f"{baseline_top1:.2f}% top-1 on the validation split; ask for at most that, "
            "or a drop such as -1.0"
        )
