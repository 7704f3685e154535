"""``--searcher optuna``: Optuna's TPE with the accuracy threshold as a constraint.

TPE models good and bad configurations with two Parzen densities. With
``constraints_func`` (Optuna's constrained TPE), infeasible trials are never
counted among the good ones, whatever their score. ``constant_liar`` keeps
concurrent suggestions apart by treating pending trials as bad ones.
"""

from __future__ import annotations

import warnings
from typing import Any

from ray.tune.search import Searcher

from edge_tune.params import Param
from edge_tune.search.observe import observed
from edge_tune.search.registry import SearchSettings, register_searcher
from edge_tune.search.state import JsonState, rng_state, set_rng_state

__all__ = ["OptunaTPE"]

_CONSTRAINT = "constraint"  # user attribute: Optuna's constraints are feasible when <= 0, ours when >= 0


class OptunaTPE(JsonState, Searcher):
    def __init__(self, params: dict[str, Param], initial_points: int = 4, seed: int = 0, constrained: bool = True):
        # The metric names are edge_tune's (trial.py): maximise "score", "constraint" >= 0 is feasible.
        super().__init__(metric="score", mode="max")
        self.constraint_metric = "constraint"
        self.params, self.initial_points, self.seed, self.constrained = params, initial_points, seed, constrained
        self._observations: list[tuple[dict[str, Any], float, float]] = []  # (config, value as maximised, constraint)
        self._pending: dict[str, Any] = {}  # trial_id -> optuna trial
        self._study = self._new_study(seed)

    def _distributions(self) -> dict[str, Any]:
        return {name: p.optuna() for name, p in self.params.items()}

    def _new_study(self, seed: int) -> Any:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # constraints_func and constant_liar are "experimental"
            sampler = optuna.samplers.TPESampler(
                seed=seed,
                n_startup_trials=self.initial_points,
                multivariate=True,
                constant_liar=True,
                constraints_func=(lambda t: (-t.user_attrs[_CONSTRAINT],)) if self.constrained else None,
            )
        return optuna.create_study(direction="maximize", sampler=sampler)

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            trial = self._study.ask(self._distributions())
        self._pending[trial_id] = trial
        return dict(trial.params)

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False) -> None:
        from optuna.trial import TrialState

        trial = self._pending.pop(trial_id, None)
        if trial is None:
            return
        seen = observed(self, result, error, self._observations)
        if seen is None:
            self._study.tell(trial, state=TrialState.FAIL)
            return
        value, constraint = seen
        trial.set_user_attr(_CONSTRAINT, constraint)
        self._study.tell(trial, value)
        self._observations.append((dict(trial.params), value, constraint))

    @property
    def observations(self) -> list[tuple[dict[str, Any], float, float]]:
        return list(self._observations)

    def _rngs(self) -> list[Any]:
        """The sampler's random states (TPE's own and its start-up random sampler's): numpy RandomStates."""
        sampler = self._study.sampler
        return [sampler._rng.rng, sampler._random_sampler._rng.rng]

    def state(self) -> dict[str, Any]:
        return {"observations": self._observations, "rng": [rng_state(r) for r in self._rngs()]}

    def load_state(self, state: dict[str, Any]) -> None:
        import optuna

        self._observations = [(c, t, k) for c, t, k in state["observations"]]
        self._study = self._new_study(self.seed)
        self._pending = {}
        for config, value, constraint in self._observations:
            self._study.add_trial(
                optuna.trial.create_trial(
                    params=config,
                    distributions=self._distributions(),
                    value=value,
                    user_attrs={_CONSTRAINT: constraint},
                    # what constraints_func wrote after the original trial: TPE reads it from here
                    system_attrs={"constraints": (-constraint,)} if self.constrained else None,
                )
            )
        # The sampler goes on from where it was, so the resumed run neither repeats nor skips a draw.
        for rng, saved in zip(self._rngs(), state["rng"], strict=True):
            set_rng_state(rng, saved)
        print(f"[edge_tune] searcher restored with {len(self._observations)} observation(s)", flush=True)


@register_searcher("optuna", "Optuna's TPE with the threshold as a constraint (constraints_func)")
def _optuna(s: SearchSettings) -> Searcher:
    return OptunaTPE(s.params, initial_points=s.initial_points, seed=s.seed, constrained=s.constrained)
