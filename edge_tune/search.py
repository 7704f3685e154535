"""Searchers: ``ConstrainedBayesOpt`` over bayesian-optimization 3.x, and random search.

Lifecycle (Ray Tune's ``Searcher`` contract): Tune calls ``suggest(trial_id)``
for each new trial, ``on_trial_complete(trial_id, result, error)`` when it
ends, and ``save``/``restore`` around interruptions. Each completed trial
registers (params, score, constraint) with bayes_opt, whose constraint model
learns the probability that ``constraint >= 0`` and whose acquisition is
expected improvement weighted by that probability. Errored trials and NaN or
infinite results never reach the optimiser.
"""

from __future__ import annotations

import math
import pickle
import warnings
from typing import Any

import numpy as np
from ray.tune.search import Searcher

from edge_tune.errors import UserError
from edge_tune.space import Param

__all__ = ["ConstrainedBayesOpt", "SEARCHERS", "make_searcher"]


class ConstrainedBayesOpt(Searcher):
    """Bayesian optimisation with ``constraint >= 0`` modelled, not penalised.

    >>> s = ConstrainedBayesOpt({"r": Param("r", "float", 0.0, 0.9)}, initial_points=2)
    >>> cfg = s.suggest("t1")
    >>> s.on_trial_complete("t1", {"score": 0.3, "constraint": 0.5})
    """

    def __init__(
        self, params: dict[str, Param], metric: str = "score", mode: str = "max",
        constraint_metric: str = "constraint", initial_points: int = 4, seed: int = 0,
    ) -> None:
        super().__init__(metric=metric, mode=mode)
        self.params = params
        self.constraint_metric = constraint_metric
        self.initial_points = initial_points
        self.seed = seed
        self._pending: dict[str, dict[str, Any]] = {}
        self._observations: list[tuple[dict[str, Any], float, float]] = []
        self._suggested = 0
        self._optimizer = self._new_optimizer()

    def _new_optimizer(self) -> Any:
        from bayes_opt import BayesianOptimization
        from scipy.optimize import NonlinearConstraint

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # bayes_opt warns that typed params are "experimental"
            return BayesianOptimization(
                f=None, pbounds={n: p.bo_bounds() for n, p in self.params.items()},
                constraint=NonlinearConstraint(None, 0.0, np.inf), random_state=self.seed,
                verbose=0, allow_duplicate_points=True,
            )

    def _typed(self, raw: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, p in self.params.items():
            v = raw[name]
            if p.type == "float":
                out[name] = float(v)
            elif p.type == "int":
                out[name] = int(round(float(v)))
            else:
                out[name] = v.item() if isinstance(v, np.generic) else v
        return out

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if self._suggested < self.initial_points or len(self._observations) < 2:
                raw = self._optimizer.random_sample(1)[0]
            else:
                raw = self._optimizer.suggest()
                if self._typed(raw) in self._pending.values():
                    raw = self._optimizer.random_sample(1)[0]  # a parallel trial already has it
        config = self._typed(raw)
        self._pending[trial_id] = config
        self._suggested += 1
        return dict(config)

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False) -> None:
        config = self._pending.pop(trial_id, None)
        if config is None or error or not result:
            return
        target, constraint = result.get(self.metric), result.get(self.constraint_metric)
        if not _finite(target) or not _finite(constraint):
            return
        assert target is not None and constraint is not None
        sign = 1.0 if self.mode == "max" else -1.0
        self._observations.append((config, sign * float(target), float(constraint)))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self._optimizer.register(config, sign * float(target), constraint_value=float(constraint))

    @property
    def observations(self) -> list[tuple[dict[str, Any], float, float]]:
        """(config, target as maximised, constraint) for every trial the optimiser saw."""
        return list(self._observations)

    def save(self, checkpoint_path: str) -> None:
        state = {"observations": self._observations, "pending": self._pending, "suggested": self._suggested,
                 "rng": self._optimizer._random_state.get_state()}
        with open(checkpoint_path, "wb") as f:
            pickle.dump(state, f)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as f:
            state = pickle.load(f)
        self._optimizer = self._new_optimizer()
        self._observations = []
        for config, target, constraint in state["observations"]:
            self._observations.append((config, target, constraint))
            self._optimizer.register(config, target, constraint_value=constraint)
        self._pending = state["pending"]
        self._suggested = state["suggested"]
        self._optimizer._random_state.set_state(state["rng"])


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


SEARCHERS = ("bayesopt", "random")


def make_searcher(name: str, params: dict[str, Param], initial_points: int, seed: int) -> Any:
    """A Searcher by name; ``random`` is Ray Tune's own, over the space's Tune domains."""
    if name == "bayesopt":
        return ConstrainedBayesOpt(params, initial_points=initial_points, seed=seed)
    if name == "random":
        from ray.tune.search.basic_variant import BasicVariantGenerator

        return BasicVariantGenerator(random_state=seed)
    raise UserError(f"--searcher {name}: unknown; choose one of {', '.join(SEARCHERS)}")
