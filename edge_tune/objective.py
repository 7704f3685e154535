"""The search objective: accuracy and latency to a score and a constraint.

``constrained`` (the default)::

    score      = ln(speedup) + accuracy_weight * (top1 - threshold) / 100
    constraint = top1 - threshold          (feasible when >= 0)

``top1`` is the lower of the PyTorch and the on-device figure: what ships is
the compiled model, and both must clear the bar. ``ln(speedup)`` makes a 10%
latency cut worth the same at any scale; with the default weight of 1.0 one
accuracy point is worth about 1% of latency, so latency dominates and accuracy
breaks near-ties (ties inside the measurement's own noise). The threshold is a
constraint for the searcher, never folded into the score as a penalty.

``combined``: one number trading accuracy against latency, with no constraint
for the searcher, as in single-metric formulations of the problem. The form
is MnasNet's weighted product (Tan et al., 2019), ACC * (LAT / LAT_base)^-w::

    score = ln(top1 / 100) + latency_weight * ln(speedup)      (w = 0.07)

With w = 0.07 one point of top-1 near 99% is worth about a 15% speed-up. The
threshold still decides which trials are feasible and reported as the answer;
it just does not steer the search. It is there for comparison
(docs/benchmarks/search.md): a weighted sum has no weight that means "keep
97.9%", which is why the constrained form is the default.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from edge_tune.errors import UserError

if TYPE_CHECKING:
    from edge_tune.outcome import TrialOutcome

__all__ = ["ACCURACY_WEIGHT", "LATENCY_WEIGHT", "OBJECTIVES", "Objective", "Threshold", "parse_threshold"]

OBJECTIVES = ("constrained", "combined")
ACCURACY_WEIGHT = 1.0  # constrained: score per 100 accuracy points, beside ln(speedup)
LATENCY_WEIGHT = 0.07  # combined: the exponent w of the speed-up

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
    if value <= -100:
        raise UserError(
            f"--accuracy-threshold {text}: a drop of {-value:g} points would accept any model (top-1 is at most "
            "100%); give a drop such as -1.0, or an absolute top-1 such as 97.5"
        )
    if value < 0:
        return Threshold(-value, is_drop=True)
    if value > 100:
        raise UserError(f"--accuracy-threshold {text}: a top-1 above 100% cannot be reached")
    return Threshold(value, is_drop=False)


@dataclass(frozen=True)
class Objective:
    threshold: float  # top-1, percent, absolute
    accuracy_weight: float = ACCURACY_WEIGHT  # constrained: score per 100 accuracy points, beside ln(speedup)
    kind: str = "constrained"  # constrained | combined
    latency_weight: float = LATENCY_WEIGHT  # combined: the exponent w of the speed-up

    @property
    def constrained(self) -> bool:
        return self.kind == "constrained"

    def constraint(self, top1: float) -> float:
        return top1 - self.threshold

    def feasible(self, top1: float) -> bool:
        return self.constraint(top1) >= 0

    def score(self, top1: float, speedup: float) -> float:
        if not (math.isfinite(top1) and math.isfinite(speedup)) or speedup <= 0:
            return math.nan
        if self.kind == "combined":
            return math.log(max(top1, 1e-6) / 100.0) + self.latency_weight * math.log(speedup)
        return math.log(speedup) + self.accuracy_weight * (top1 - self.threshold) / 100.0

    def judge(self, outcome: TrialOutcome) -> None:
        """Fill a final outcome's feasible, constraint and score from its judged top-1 and speed-up."""
        top1 = outcome.top1_judged
        outcome.feasible = self.feasible(top1)
        outcome.constraint = self.constraint(top1)
        outcome.score = self.score(top1, outcome.speedup)


def check_reachable(threshold: float, baseline_top1: float, spec: Threshold) -> None:
    """A threshold above what the unpruned model scores cannot be met by pruning it."""
    if threshold > baseline_top1:
        raise UserError(
            f"--accuracy-threshold {spec}: unreachable, the baseline itself scores "
            f"{baseline_top1:.2f}% top-1 on the validation split; ask for at most that, "
            "or a drop such as -1.0"
        )
