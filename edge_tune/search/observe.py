"""What a searcher may learn from a finished trial: the one filter every searcher shares."""

from __future__ import annotations

from typing import Any

from edge_tune.outcome import finite

__all__ = ["observed"]


def observed(
    searcher: Any, result: dict[str, Any] | None, error: bool, observations: list[tuple[dict[str, Any], float, float]]
) -> tuple[float, float] | None:
    """(target as maximised, constraint) of a finished trial for ``searcher``, or None if it must not be learnt.

    Errored trials and NaN or infinite results are None. Without a constraint (the combined
    objective) the constraint is 0. A trial stopped early for accuracy has no latency, hence
    no score, but it does show where the threshold is missed: its target, irrelevant to expected
    improvement since it is infeasible, is the worst target (as maximised) of the searcher's ``observations``
    so far, its (config, target, constraint) triples.
    """
    if error or not result:
        return None
    target: Any = result.get(searcher.metric)
    constraint: Any = result.get(searcher.constraint_metric) if searcher.constrained else 0.0
    if not finite(constraint):
        return None
    sign = 1.0 if searcher.mode == "max" else -1.0
    if finite(target):
        return sign * float(target), float(constraint)
    if searcher.constrained and constraint < 0 and observations:
        return min(t for _, t, _ in observations), float(constraint)
    return None
