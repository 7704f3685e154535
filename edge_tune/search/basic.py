"""The baselines a user would run without edge_tune's searcher: random search and a uniform sweep."""

from __future__ import annotations

import pickle
from typing import Any

import numpy as np
from ray.tune.search import Searcher

from edge_tune.space import Param

__all__ = ["RandomSearch", "UniformSweep", "uniform_point"]


class _Stateful(Searcher):
    """Save and restore the fields named in ``_state`` (Tune calls these around interruptions)."""

    _state: tuple[str, ...] = ()

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as f:
            pickle.dump({k: getattr(self, k) for k in self._state}, f)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as f:
            for k, v in pickle.load(f).items():
                setattr(self, k, v)


class RandomSearch(_Stateful):
    """Independent uniform draws: floats in [low, high], ints in {low..high}, choices equally likely."""

    _state = ("_rng",)

    def __init__(self, params: dict[str, Param], metric: str = "score", mode: str = "max", seed: int = 0) -> None:
        super().__init__(metric=metric, mode=mode)
        self.params = params
        self._rng = np.random.default_rng(seed)

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        config: dict[str, Any] = {}
        for name, p in self.params.items():
            if p.type == "float":
                config[name] = float(self._rng.uniform(p.low, p.high))
            elif p.type == "int":
                config[name] = int(self._rng.integers(int(p.low), int(p.high) + 1))
            else:
                config[name] = p.values[int(self._rng.integers(len(p.values)))]
        return config

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False) -> None:
        pass


class UniformSweep(_Stateful):
    """The sweep a user tries by hand: every numeric parameter at the same fraction of its range.

    Trial k of n sets every float and int parameter to ``low + k/(n-1) * (high - low)``
    (ints rounded): for a space of pruning ratios, one uniform ratio from the
    lowest to the highest. A ``choice`` parameter takes its values in turn.
    After n suggestions the sweep is finished.

    >>> s = UniformSweep({"a": Param("a", "float", 0.0, 0.8), "b": Param("b", "float", 0.0, 0.4)}, n=3)
    >>> [s.suggest(str(i)) for i in range(3)][1]
    {'a': 0.4, 'b': 0.2}
    """

    _state = ("_next",)

    def __init__(self, params: dict[str, Param], n: int, metric: str = "score", mode: str = "max") -> None:
        super().__init__(metric=metric, mode=mode)
        self.params, self.n = params, n
        self._next = 0

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        if self._next >= self.n:
            return Searcher.FINISHED  # type: ignore[return-value]  # Tune's sentinel, a str
        k, self._next = self._next, self._next + 1
        return uniform_point(self.params, k / (self.n - 1) if self.n > 1 else 0.0, k)

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False) -> None:
        pass


def uniform_point(params: dict[str, Param], t: float, k: int) -> dict[str, Any]:
    """Every float and int parameter at fraction ``t`` of its range (ints rounded); choice ``k`` in turn."""
    config: dict[str, Any] = {}
    for name, p in params.items():
        if p.type == "choice":
            config[name] = p.values[k % len(p.values)]
        else:
            value = p.low + t * (p.high - p.low)
            config[name] = round(value) if p.type == "int" else round(value, 10)
    return config
