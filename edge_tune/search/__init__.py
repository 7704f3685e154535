"""Searchers by name, each a Ray Tune ``Searcher`` over the space's parameters.

- ``bayesopt``: ``ConstrainedBayesOpt``, GP-based BO with the threshold as a constraint model (default)
- ``optuna``: Optuna's TPE with the threshold as a constraint
- ``random``: independent uniform draws
- ``grid``: the uniform-ratio sweep, every ratio at the same fraction of its range

All of them see the same results (``score``, ``constraint``) and are seeded.
"""

from __future__ import annotations

from typing import Any

from edge_tune.errors import UserError
from edge_tune.search.basic import RandomSearch, UniformSweep
from edge_tune.search.bayesopt import ConstrainedBayesOpt
from edge_tune.search.tpe import OptunaTPE
from edge_tune.space import Param

__all__ = ["SEARCHERS", "ConstrainedBayesOpt", "OptunaTPE", "RandomSearch", "UniformSweep", "make_searcher"]

SEARCHERS = ("bayesopt", "optuna", "random", "grid")


def make_searcher(
    name: str, params: dict[str, Param], initial_points: int, seed: int, num_samples: int = 16, constrained: bool = True
) -> Any:
    """A searcher by name. ``constrained=False`` (the combined objective) drops the constraint model."""
    if name == "bayesopt":
        return ConstrainedBayesOpt(params, initial_points=initial_points, seed=seed, constrained=constrained)
    if name == "optuna":
        return OptunaTPE(params, initial_points=initial_points, seed=seed, constrained=constrained)
    if name == "random":
        return RandomSearch(params, seed=seed)
    if name == "grid":
        return UniformSweep(params, n=num_samples)
    raise UserError(f"--searcher {name}: unknown; choose one of {', '.join(SEARCHERS)}")
