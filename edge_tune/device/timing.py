"""Interleaved A/B timing and its statistics, free of any runtime.

``interleave`` takes two callables that each run one inference; it warms both
up, then alternates them inference by inference (A B A B ...) in rounds, the
first of each round alternating too. Each round yields the ratio
median(B) / median(A): how many times faster A is than B. It stops when the
95% confidence interval of the median ratio is within ``target_ci`` of it
(relative half-width), after ``max_rounds``, or at ``time_cap_s``.

>>> plan = TimingPlan(warmup=2, iters_per_round=3, min_rounds=6, max_rounds=6)
>>> s = interleave(lambda: None, lambda: None, plan)
>>> s.rounds
6
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["ABSamples", "TimingPlan", "interleave", "median_ci"]


@dataclass(frozen=True)
class TimingPlan:
    warmup: int = 20  # untimed inferences of each model first
    iters_per_round: int = 25  # timed inferences of each model per round
    min_rounds: int = 10  # rounds before the stopping rule is looked at
    max_rounds: int = 200  # hard stop
    target_ci: float = 0.02  # stop once the 95% CI half-width is within 2% of the speed-up
    time_cap_s: float = 20.0  # stop after this many seconds of timing, converged or not


@dataclass
class ABSamples:
    """Everything one interleaved measurement saw; times in milliseconds."""

    a_ms: list[float] = field(default_factory=list)  # every timed inference of A
    b_ms: list[float] = field(default_factory=list)
    ratios: list[float] = field(default_factory=list)  # per round: median(B) / median(A)
    a_round_medians: list[float] = field(default_factory=list)
    b_round_medians: list[float] = field(default_factory=list)
    first_a_ms: float = math.nan  # A's very first inference (cold), before warm-up
    converged: bool = False  # the CI target was met before a cap
    seconds: float = 0.0  # wall time of the timed part

    @property
    def rounds(self) -> int:
        return len(self.ratios)

    @property
    def speedup(self) -> float:
        return statistics.median(self.ratios)

    def speedup_ci(self) -> tuple[float, float]:
        return median_ci(self.ratios)


def median_ci(values: list[float], confidence_z: float = 1.96) -> tuple[float, float]:
    """Distribution-free confidence interval of the median, from order statistics.

    The ranks n/2 ± z·√n/2 of the sorted values bound the median with about 95%
    confidence for z = 1.96, whatever the distribution of the values.
    """
    n = len(values)
    if n < 3:
        return (-math.inf, math.inf)
    s = sorted(values)
    half = confidence_z * math.sqrt(n) / 2
    lo, hi = math.floor(n / 2 - half), math.ceil(n / 2 + half) - 1
    if lo < 0 or hi >= n:
        return (-math.inf, math.inf)
    return (s[lo], s[hi])


def _converged(samples: ABSamples, plan: TimingPlan) -> bool:
    if samples.rounds < plan.min_rounds:
        return False
    lo, hi = samples.speedup_ci()
    return (hi - lo) / 2 <= plan.target_ci * samples.speedup


def interleave(
    run_a: Callable[[], object],
    run_b: Callable[[], object],
    plan: TimingPlan,
    clock: Callable[[], int] = time.perf_counter_ns,
) -> ABSamples:
    """Time ``run_a`` against ``run_b`` as described in the module docstring."""
    samples = ABSamples()
    t0 = clock()
    run_a()
    samples.first_a_ms = (clock() - t0) / 1e6
    for _ in range(plan.warmup):
        run_a()
        run_b()
    start = clock()
    while samples.rounds < plan.max_rounds:
        ta: list[float] = []
        tb: list[float] = []
        order = ((run_a, ta), (run_b, tb)) if samples.rounds % 2 == 0 else ((run_b, tb), (run_a, ta))
        for _ in range(plan.iters_per_round):
            for run, times in order:
                t0 = clock()
                run()
                times.append((clock() - t0) / 1e6)
        ma, mb = statistics.median(ta), statistics.median(tb)
        samples.a_ms += ta
        samples.b_ms += tb
        samples.a_round_medians.append(ma)
        samples.b_round_medians.append(mb)
        samples.ratios.append(mb / ma)
        if _converged(samples, plan):
            samples.converged = True
            break
        if (clock() - start) / 1e9 >= plan.time_cap_s:
            break
    samples.seconds = (clock() - start) / 1e9
    return samples


def cv(values: list[float]) -> float:
    """Coefficient of variation (population standard deviation over the mean)."""
    mean = statistics.fmean(values)
    return statistics.pstdev(values) / mean if len(values) > 1 and mean else 0.0
