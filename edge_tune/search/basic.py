"""The baselines a user would run without edge_tune's searcher: random search and a uniform sweep."""

from __future__ import annotations

from typing import Any

import numpy as np
from ray.tune.search import Searcher

from edge_tune.params import Param, uniform_point
from edge_tune.search.observe import observed
from edge_tune.search.registry import SearchSettings, register_searcher
from edge_tune.search.state import JsonState, rng_state, set_rng_state

__all__ = ["RandomSearch", "UniformSweep"]


class _Recording(JsonState, Searcher):
    """A searcher that learns nothing from results but keeps what it was shown (``observations``), and saves
    it with its own position (Tune calls ``save`` and ``restore`` around interruptions)."""

    constraint_metric = "constraint"
    constrained = True

    def __init__(self, params: dict[str, Param], metric: str = "score", mode: str = "max") -> None:
        super().__init__(metric=metric, mode=mode)
        self.params = params
        self._configs: dict[str, dict[str, Any]] = {}
        self._observations: list[tuple[dict[str, Any], float, float]] = []

    def _suggested(self, trial_id: str, config: dict[str, Any]) -> dict[str, Any]:
        self._configs[trial_id] = config
        return dict(config)

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False) -> None:
        config = self._configs.pop(trial_id, None)
        seen = observed(self, result, error, self._observations)
        if config is not None and seen is not None:
            self._observations.append((config, *seen))

    @property
    def observations(self) -> list[tuple[dict[str, Any], float, float]]:
        return list(self._observations)

    def state(self) -> dict[str, Any]:
        return {"observations": self._observations}

    def load_state(self, state: dict[str, Any]) -> None:
        self._observations = [(c, t, k) for c, t, k in state["observations"]]


class RandomSearch(_Recording):
    """Independent uniform draws: floats in [low, high], ints in {low..high}, choices equally likely."""

    def __init__(self, params: dict[str, Param], metric: str = "score", mode: str = "max", seed: int = 0) -> None:
        super().__init__(params, metric, mode)
        self._rng = np.random.default_rng(seed)

    def state(self) -> dict[str, Any]:
        return super().state() | {"rng": rng_state(self._rng)}

    def load_state(self, state: dict[str, Any]) -> None:
        super().load_state(state)
        set_rng_state(self._rng, state["rng"])

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        return self._suggested(trial_id, {name: p.sample(self._rng) for name, p in self.params.items()})


class UniformSweep(_Recording):
    """The sweep a user tries by hand: every numeric parameter at the same fraction of its range.

    Trial k of n sets every float and int parameter to ``low + k/(n-1) * (high - low)``
    (ints rounded): for a space of pruning ratios, one uniform ratio from the
    lowest to the highest. A ``choice`` parameter takes its values in turn.
    After n suggestions the sweep is finished.

    >>> s = UniformSweep({"a": Param("a", "float", 0.0, 0.8), "b": Param("b", "float", 0.0, 0.4)}, n=3)
    >>> [s.suggest(str(i)) for i in range(3)][1]
    {'a': 0.4, 'b': 0.2}
    """

    def __init__(self, params: dict[str, Param], n: int, metric: str = "score", mode: str = "max") -> None:
        super().__init__(params, metric, mode)
        self.n = n
        self._next = 0

    def state(self) -> dict[str, Any]:
        return super().state() | {"next": self._next}

    def load_state(self, state: dict[str, Any]) -> None:
        super().load_state(state)
        self._next = int(state["next"])

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        if self._next >= self.n:
            return Searcher.FINISHED  # type: ignore[return-value]  # Tune's sentinel, a str
        k, self._next = self._next, self._next + 1
        return self._suggested(trial_id, uniform_point(self.params, k / (self.n - 1) if self.n > 1 else 0.0, k))


@register_searcher("random", "independent uniform draws")
def _random(s: SearchSettings) -> Searcher:
    return RandomSearch(s.params, seed=s.seed)


@register_searcher("grid", "the uniform sweep a user tries by hand: every ratio at the same fraction of its range")
def _grid(s: SearchSettings) -> Searcher:
    return UniformSweep(s.params, n=s.num_samples)
