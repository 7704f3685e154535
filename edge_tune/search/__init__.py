"""Searchers by name, each a Ray Tune ``Searcher`` over the space's parameters (``registry.SEARCHERS``).

- ``bayesopt``: ``ConstrainedBayesOpt``, GP-based BO with the threshold as a constraint model (default)
- ``optuna``: Optuna's TPE with the threshold as a constraint
- ``random``: independent uniform draws
- ``grid``: the uniform-ratio sweep, every ratio at the same fraction of its range
- ``sieve``: ``Sieve``, screens candidates on the device and by an accuracy proxy, models only accuracy

All of them see the same results (``score``, ``constraint``), learn only what
``observed`` lets through, and are seeded.
"""

from __future__ import annotations

# Imported in the order --help lists them.
from edge_tune.search.bayesopt import ConstrainedBayesOpt  # isort: skip
from edge_tune.search.tpe import OptunaTPE  # isort: skip
from edge_tune.search.basic import RandomSearch, UniformSweep  # isort: skip
from edge_tune.search.sieve import Sieve  # isort: skip
from edge_tune.search.registry import SEARCHERS, SearchSettings, make_searcher, register_searcher

__all__ = [
    "SEARCHERS",
    "ConstrainedBayesOpt",
    "OptunaTPE",
    "RandomSearch",
    "SearchSettings",
    "Sieve",
    "UniformSweep",
    "make_searcher",
    "register_searcher",
]
