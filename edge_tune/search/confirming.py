"""``Confirming``: any searcher, with fine-tunes kept back to confirm its best candidates (``edge_tune.confirm``)."""

from __future__ import annotations

import math
from typing import Any

from ray.tune.search import Searcher

from edge_tune.confirm import FINISHED, MARGIN, WAIT, Candidate, add_search_run, next_run
from edge_tune.outcome import REPEAT, finite
from edge_tune.search.state import JsonState

__all__ = ["Confirming"]


class Confirming(JsonState, Searcher):
    """The inner searcher proposes ``search`` trials and learns from them only; then, once all of them have
    finished, this one proposes up to ``reserve`` repeats of the candidates, ``seeds`` each, the best bet
    first (``edge_tune.confirm.next_run``); ``margin``: ``--confirm-margin``."""

    def __init__(self, inner: Any, search: int, reserve: int, seeds: int, margin: float = MARGIN) -> None:
        super().__init__(metric=inner.metric, mode=inner.mode)
        self.inner = inner
        self._search_left, self._reserve_left, self.seeds = search, reserve, seeds
        self.margin = margin
        self._live: dict[str, dict[str, Any]] = {}  # search trials running: their configs
        self._repeats: dict[str, str] = {}  # confirmation trials running: their candidate's key
        self._candidates: dict[str, Candidate] = {}

    def set_search_properties(self, metric: str | None, mode: str | None, config: dict, **spec: Any) -> bool:
        return bool(self.inner.set_search_properties(metric, mode, config, **spec))

    @property
    def candidates(self) -> list[Candidate]:
        """Best single-run score first (ties: the earlier trial)."""
        return sorted(self._candidates.values(), key=lambda c: -c.score)

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        if self._search_left > 0:
            config = self.inner.suggest(trial_id)
            if config is None:
                return None
            if config != Searcher.FINISHED:
                self._search_left -= 1
                self._live[trial_id] = dict(config)
                return dict(config)
            self._search_left = 0  # the inner searcher ran out early: confirmation begins
        if self._live:
            return None  # every search result first: the best candidate may still be running
        chosen = next_run(self.candidates, self.seeds, self._reserve_left, self.margin)
        if chosen == FINISHED:
            return Searcher.FINISHED  # type: ignore[return-value]  # Tune's sentinel, a str
        if chosen == WAIT or not isinstance(chosen, Candidate):
            return None
        chosen.issued += 1
        self._reserve_left -= 1
        self._repeats[trial_id] = chosen.key
        return {**chosen.config, REPEAT: chosen.issued}

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        if trial_id in self._live:
            self.inner.on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False) -> None:
        key = self._repeats.pop(trial_id, None)
        if key is not None:
            value: Any = (result or {}).get("constraint")
            final = not error and bool(result) and bool((result or {}).get("final"))
            self._candidates[key].constraints.append(float(value) if final and finite(value) else float("nan"))
            return
        config = self._live.pop(trial_id, None)
        if config is None:
            return
        self.inner.on_trial_complete(trial_id, result=result, error=error)
        r = result or {}
        score: Any = r.get("score")
        constraint: Any = r.get("constraint")
        if error or not r.get("final") or not r.get("feasible") or not finite(score) or not finite(constraint):
            return
        speedup: Any = r.get("speedup")
        add_search_run(
            self._candidates, config, float(score), float(constraint), float(speedup) if finite(speedup) else math.nan
        )

    def state(self) -> dict[str, Any]:
        return {
            "inner": self.inner.state(),
            "search_left": self._search_left,
            "reserve_left": self._reserve_left,
            "live": self._live,
            "repeats": self._repeats,
            "candidates": [vars(c) for c in self._candidates.values()],
        }

    def load_state(self, state: dict[str, Any]) -> None:
        self.inner.load_state(state["inner"])
        self._search_left, self._reserve_left = int(state["search_left"]), int(state["reserve_left"])
        self._live, self._repeats = dict(state["live"]), dict(state["repeats"])
        candidates = [Candidate(**c) for c in state["candidates"]]
        for c in candidates:
            c.constraints = [float("nan") if v is None else float(v) for v in c.constraints]
            c.gain = float("nan") if c.gain is None else float(c.gain)
        self._candidates = {c.key: c for c in candidates}
