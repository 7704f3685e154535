"""``Sieve``: latency is cheap, accuracy is dear; fine-tune only the candidates that can win.

A pruned candidate's architecture is known before any training, so its
speed-up on the device costs a second (and is cached by structure), while
its accuracy costs a fine-tune. Sieve screens many candidates without
training and spends fine-tunes where they can still improve the answer:

1. **Screen.** Each candidate configuration is pruned at once to its final
   architecture (what the schedule keeps at its end), its speed-up measured
   on the device (no profile, interleaved with the baseline as always) and its
   accuracy proxy taken: top-1 after re-estimating the batch norms, no
   training (``edge_tune.proxy``). The first suggestion screens a pool (the
   uniform diagonal a user would sweep by hand, then a Latin hypercube); every
   later one screens a few more, mutations of the most promising candidates
   and fresh random ones.
2. **Model what is uncertain.** Latency is measured, so only accuracy is
   modelled: the recovery ``top1 - proxy`` that fine-tuning brings, as a
   Bayesian linear function of how far the proxy fell below the baseline's
   (a prior: fine-tuning wins back about 80 % of it) plus a Gaussian process
   over the configuration for what that line misses
   (``RecoveryModel``). Its hyperparameters (amplitude, length scale, noise)
   are chosen by marginal likelihood on a small grid.
3. **Fine-tune the best expected feasible speed-up.** A candidate is worth
   ``P(top-1 >= threshold + aim) * max(0, ln speed-up - ln incumbent)``, where the
   incumbent is the fastest fine-tuned candidate the model believes feasible
   (the baseline, 1.0, before any). A candidate identical in architecture to
   the baseline, to one fine-tuned or to one pending is never proposed; pending
   ones are also believed at their predicted recovery, so parallel trials get
   different, informative candidates. ``aim`` is 0 unless the picks are
   confirmed (``--confirm``): then a pick must hold by the margin, so Sieve
   aims that far above the threshold (``confirm.aim``: the margin in standard
   errors of a mean over the candidate's runs, at the prior seed noise).

The searcher runs in the driver and reaches the device and the data through
a ``Screen`` the experiment installs (``use_screen``); a unit test gives it a
synthetic one. Its state (pool, observations, random state) is saved as JSON.
"""

from __future__ import annotations

import itertools
import math
import warnings
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from ray.tune.search import Searcher

from edge_tune.errors import UserError
from edge_tune.params import Param, uniform_point
from edge_tune.search.observe import observed
from edge_tune.search.registry import SearchSettings, register_searcher
from edge_tune.search.state import JsonState, rng_state, set_rng_state

__all__ = ["RecoveryModel", "Screen", "Screened", "Sieve", "current_screen", "use_screen"]


@dataclass(frozen=True)
class Screened:
    """What a candidate costs to know without training."""

    key: str  # its architecture (and anything else that makes two fine-tunes differ): equal keys, same network
    speedup: float  # baseline latency / candidate latency, on the device
    proxy: float  # top-1 (%) after batch-norm re-estimation, no training


class Screen(Protocol):
    """Screens configurations for Sieve: the experiment's reaches the device and the data."""

    @property
    def baseline(self) -> Screened: ...  # the unpruned network: its key, 1.0, its proxy

    @property
    def threshold(self) -> float: ...  # the top-1 (%) a candidate must clear

    def __call__(self, config: dict[str, Any]) -> Screened: ...


_SCREEN: list[Screen] = []  # the driver's one screen; a resumed searcher finds it here, not in its pickle


def use_screen(screen: Screen | None) -> None:
    """Install the screen Sieve uses in this process (None removes it)."""
    _SCREEN[:] = [screen] if screen is not None else []


def current_screen() -> Screen:
    if not _SCREEN:
        raise UserError("--searcher sieve: no screen installed (it screens candidates on the device and the data)")
    return _SCREEN[0]


NEEDS_CONSTRAINT = "--searcher sieve models the threshold's constraint: use it with --objective constrained"


def _phi(x: np.ndarray) -> np.ndarray:
    """The standard normal CDF."""
    return 0.5 * (1.0 + np.vectorize(math.erf)(x / math.sqrt(2.0)))


class RecoveryModel:
    """What fine-tuning wins back over the proxy: ``top1 - proxy ~ b0 + b1 * gap + f(x) + noise``.

    ``gap`` is how far the candidate's proxy fell below the baseline's (points, >= 0); ``x`` its
    configuration in the unit cube. ``b ~ N((0.5, 0.8), diag(1.0, 0.1)^2)``: before any fine-tune the
    model expects 80 % of the gap back and is unsure of it by a tenth of the gap. ``f`` is a Gaussian
    process (squared exponential on ``x / sqrt(d)``). The linear part is integrated out, so the
    whole is one Gaussian process whose hyperparameters are picked on ``GRID`` by marginal likelihood.
    """

    PRIOR_MEAN = np.array([0.5, 0.8])
    PRIOR_SD = np.array([1.0, 0.1])
    GRID = tuple((a, ell, n) for a in (0.5, 1.0, 2.0, 4.0) for ell in (0.15, 0.3, 0.6, 1.2) for n in (0.3, 0.6, 1.2))

    def __init__(self) -> None:
        self.hyper = (1.0, 0.3, 0.6)  # amplitude (points), length scale, seed noise (points)
        self._x = np.zeros((0, 0))
        self._gap = np.zeros(0)
        self._y = np.zeros(0)
        self._noise = np.zeros(0)  # per point: 0 for a believed pending point

    def _features(self, gap: np.ndarray) -> np.ndarray:
        return np.stack([np.ones_like(gap), gap], axis=1)

    def _cov(self, xa: np.ndarray, ga: np.ndarray, xb: np.ndarray, gb: np.ndarray, amp: float, ell: float) -> Any:
        d2 = ((xa[:, None, :] - xb[None, :, :]) ** 2).sum(-1)
        linear = self._features(ga) @ np.diag(self.PRIOR_SD**2) @ self._features(gb).T
        return linear + amp**2 * np.exp(-d2 / (2 * ell**2))

    def fit(self, x: np.ndarray, gap: np.ndarray, y: np.ndarray, believed: int = 0) -> RecoveryModel:
        """Observations ``(x, gap, y)``; the last ``believed`` rows are pending points held at a prediction."""
        self._x, self._gap, self._y = x, gap, y
        observed_rows = len(y) - believed
        self._noise = np.array([1.0] * observed_rows + [1e-3] * believed)
        if observed_rows >= 3:
            self.hyper = max(self.GRID, key=lambda h: self._log_likelihood(*h))
        return self

    def _solve(self, amp: float, ell: float, noise: float) -> tuple[np.ndarray, np.ndarray]:
        k = self._cov(self._x, self._gap, self._x, self._gap, amp, ell)
        k[np.diag_indices_from(k)] += (noise * self._noise) ** 2 + 1e-9
        return np.linalg.cholesky(k), self._y - self._features(self._gap) @ self.PRIOR_MEAN

    def _log_likelihood(self, amp: float, ell: float, noise: float) -> float:
        try:
            chol, r = self._solve(amp, ell, noise)
        except np.linalg.LinAlgError:
            return -math.inf
        alpha = np.linalg.solve(chol, r)
        return float(-0.5 * alpha @ alpha - np.log(np.diag(chol)).sum())

    def predict(self, x: np.ndarray, gap: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Mean recovery and its standard deviation (of the mean over seeds: the noise is left out)."""
        amp, ell, noise = self.hyper
        prior = self._features(gap) @ self.PRIOR_MEAN
        var = (self._features(gap) ** 2) @ self.PRIOR_SD**2 + amp**2
        if not len(self._y):
            return prior, np.sqrt(var)
        chol, r = self._solve(amp, ell, noise)
        k = self._cov(self._x, self._gap, x, gap, amp, ell)
        v = np.linalg.solve(chol, k)
        mean = prior + v.T @ np.linalg.solve(chol, r)
        return mean, np.sqrt(np.maximum(var - (v**2).sum(0), 1e-12))


class Sieve(JsonState, Searcher):
    """Screens candidates on the device and by the accuracy proxy; fine-tunes the best expected feasible one.

    ``pool``: candidates screened at the first suggestion; ``step``: more screened at each later one;
    ``diagonal``: how many of the pool lie on the uniform diagonal (fractions 1/(n+1) .. n/(n+1)).
    """

    def __init__(
        self,
        params: dict[str, Param],
        *,
        seed: int = 0,
        pool: int = 48,
        step: int = 12,
        diagonal: int = 15,
        screen: Screen | None = None,
        aim: float = 0.0,
    ) -> None:
        super().__init__(metric="score", mode="max")  # the objective's score; its constraint is modelled
        self.params = params
        self.constraint_metric = "constraint"
        self.constrained = True
        self.pool_size, self.step, self.diagonal = pool, step, diagonal
        self.aim = aim  # points above the threshold a candidate's top-1 is to reach (a confirmed pick's margin)
        self._screen = screen  # else the one installed with use_screen (never saved with the searcher)
        self._rng = np.random.default_rng(seed)
        self._pool: list[tuple[dict[str, Any], Screened]] = []  # screened candidates, one per key
        self._keys: set[str] = set()
        self._pending: dict[str, tuple[dict[str, Any], Screened]] = {}
        self._done: list[tuple[dict[str, Any], Screened, float]] = []  # fine-tuned: (config, screened, constraint)
        self._tried: set[str] = set()  # keys fine-tuned, pending or errored
        self._observations: list[tuple[dict[str, Any], float, float]] = []
        self.origins: list[str] = []
        self.screened = 0  # configurations screened (duplicates included)

    # -- screening -----------------------------------------------------------------------------------------

    @property
    def screen(self) -> Screen:
        return self._screen if self._screen is not None else current_screen()

    def _unit(self, config: dict[str, Any]) -> np.ndarray:
        out = []
        for name, p in self.params.items():
            v = config[name]
            if p.type == "choice":
                out.append((p.values.index(v) + 0.5) / len(p.values))
            else:
                out.append((float(v) - p.low) / (p.high - p.low) if p.high > p.low else 0.5)
        return np.array(out)

    def _from_unit(self, u: np.ndarray) -> dict[str, Any]:
        config = {}
        for (name, p), x in zip(self.params.items(), np.clip(u, 0.0, 1.0), strict=True):
            if p.type == "choice":
                config[name] = p.values[min(int(x * len(p.values)), len(p.values) - 1)]
            else:
                config[name] = p.typed(p.low + float(x) * (p.high - p.low))
        return config

    def _add(self, configs: list[dict[str, Any]]) -> None:
        screen = self.screen
        for config in configs:
            s = screen(config)
            self.screened += 1
            if s.key in self._keys or s.key == screen.baseline.key or not math.isfinite(s.speedup):
                continue
            self._keys.add(s.key)
            self._pool.append((config, s))

    def _initial(self) -> list[dict[str, Any]]:
        n = self.diagonal
        diagonal = [uniform_point(self.params, (k + 1) / (n + 1), k) for k in range(min(n, self.pool_size))]
        rest = self.pool_size - len(diagonal)
        d = len(self.params)
        cube = (np.stack([self._rng.permutation(rest) for _ in range(d)], axis=1) + self._rng.random((rest, d))) / max(
            rest, 1
        )
        return diagonal + [self._from_unit(u) for u in cube]

    def _more(self, seeds: list[tuple[dict[str, Any], Screened]]) -> list[dict[str, Any]]:
        """Three quarters moves from ``seeds`` (the most promising candidates), a quarter fresh random points.

        A move either nudges one to three parameters (by 10 % of their range) or trades: one parameter
        up and another down by the same 5-20 %, which walks along the threshold's boundary where the
        best per-layer allocations lie (prune the layers the accuracy does not miss, keep the others).
        """
        d, out = len(self.params), []
        for i in range(self.step):
            if i % 4 == 3 or not seeds:
                out.append(self._from_unit(self._rng.random(d)))
                continue
            u = self._unit(seeds[i % len(seeds)][0]).copy()
            if d > 1 and self._rng.random() < 0.5:
                up, down = self._rng.choice(d, size=2, replace=False)
                delta = self._rng.uniform(0.05, 0.2)
                u[up] += delta
                u[down] -= delta
            else:
                moved = self._rng.choice(d, size=min(d, int(self._rng.integers(1, 4))), replace=False)
                u[moved] += self._rng.normal(0.0, 0.1, size=len(moved))
            out.append(self._from_unit(u))
        return out

    # -- the model and the choice --------------------------------------------------------------------------

    def _model(self) -> RecoveryModel:
        rows = [(c, s, k + self.screen.threshold - s.proxy) for c, s, k in self._done]
        model = RecoveryModel()
        pending = list(self._pending.values())
        if rows:
            model.fit(*self._arrays([(c, s) for c, s, _ in rows]), np.array([y for *_, y in rows]))
        if pending:  # believed at the prediction: parallel trials go elsewhere
            x, gap = self._arrays(pending)
            mean, _ = model.predict(x, gap)
            xs, gaps = self._arrays([(c, s) for c, s, _ in rows] + pending)
            ys = np.concatenate([np.array([y for *_, y in rows]), mean])
            model.fit(xs, gaps, ys, believed=len(pending))
        return model

    def _arrays(self, items: list[tuple[dict[str, Any], Screened]]) -> tuple[np.ndarray, np.ndarray]:
        scale = math.sqrt(max(len(self.params), 1))
        x = np.array([self._unit(c) / scale for c, _ in items]).reshape(len(items), len(self.params))
        gap = np.array([max(0.0, self.screen.baseline.proxy - s.proxy) for _, s in items])
        return x, gap

    def _feasibility(self, model: RecoveryModel, items: list[tuple[dict[str, Any], Screened]]) -> np.ndarray:
        x, gap = self._arrays(items)
        mean, sd = model.predict(x, gap)
        margin = np.array([s.proxy for _, s in items]) + mean - self.screen.threshold - self.aim
        return _phi(margin / sd)

    def incumbent(self, model: RecoveryModel | None = None) -> float:
        """The fastest fine-tuned candidate the model believes feasible (probability >= 1/2); 1.0 before any."""
        if not self._done:
            return 1.0
        model = model or self._model()
        p = self._feasibility(model, [(c, s) for c, s, _ in self._done])
        return max([1.0, *(s.speedup for (_, s, _), q in zip(self._done, p, strict=True) if q >= 0.5)])

    def _ranked(self, model: RecoveryModel) -> list[tuple[float, float, dict[str, Any], Screened]]:
        """Untried candidates by expected feasible gain, best first: (gain, P(feasible), config, screened)."""
        open_ = [(c, s) for c, s in self._pool if s.key not in self._tried]
        if not open_:
            return []
        p = self._feasibility(model, open_)
        best = math.log(self.incumbent(model))
        scored = [
            (q * max(0.0, math.log(s.speedup) - best), float(q), c, s) for (c, s), q in zip(open_, p, strict=True)
        ]
        return sorted(scored, key=lambda t: (t[0], t[1] * t[3].speedup), reverse=True)

    def _seeds(self, model: RecoveryModel, ranked: list[tuple[float, float, dict[str, Any], Screened]]) -> Any:
        """Where the next moves start: the best-ranked untried candidates and the fastest screened ones the
        model believes feasible (tried or not), alternately."""
        believed = [(c, s) for c, s in self._pool if s.speedup > 1.0]
        p = self._feasibility(model, believed) if believed else np.zeros(0)
        fast = sorted(((s.speedup, i) for i, ((_, s), q) in enumerate(zip(believed, p, strict=True)) if q >= 0.5))
        fastest = [believed[i] for _, i in reversed(fast[-4:])]
        top = [(c, s) for _, _, c, s in ranked[:4]]
        return [x for pair in itertools.zip_longest(top, fastest) for x in pair if x is not None]

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if not self._pool:
                self._add(self._initial())
            model = self._model()
            ranked = self._ranked(model)
            self._add(self._more(self._seeds(model, ranked)))
            ranked = self._ranked(model)
        if not ranked:  # every screened architecture was tried: a fresh draw, screened like the others
            self._add([self._from_unit(self._rng.random(len(self.params))) for _ in range(self.step)])
            ranked = self._ranked(model)
            if not ranked:
                return Searcher.FINISHED  # type: ignore[return-value]  # Tune's sentinel, a str
        gain, _, config, s = ranked[0]
        self.origins.append("model" if gain > 0 else "feasibility")
        self._pending[trial_id] = (config, s)
        self._tried.add(s.key)
        return dict(config)

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False) -> None:
        item = self._pending.pop(trial_id, None)
        seen = observed(self, result, error, self._observations)
        if item is not None and seen is not None:
            self._observations.append((item[0], *seen))
            self._done.append((item[0], item[1], seen[1]))

    @property
    def observations(self) -> list[tuple[dict[str, Any], float, float]]:
        return list(self._observations)

    # -- saved state ---------------------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        def plain(s: Screened) -> list[Any]:
            return [s.key, s.speedup, s.proxy]

        return {
            "pool": [[c, plain(s)] for c, s in self._pool],
            "pending": {t: [c, plain(s)] for t, (c, s) in self._pending.items()},
            "done": [[c, plain(s), k] for c, s, k in self._done],
            "tried": sorted(self._tried),
            "observations": self._observations,
            "origins": self.origins,
            "screened": self.screened,
            "rng": rng_state(self._rng),
        }

    def load_state(self, state: dict[str, Any]) -> None:
        def screened(v: list[Any]) -> Screened:
            return Screened(str(v[0]), float(v[1]), float(v[2]))

        self._pool = [(c, screened(s)) for c, s in state["pool"]]
        self._keys = {s.key for _, s in self._pool}
        self._pending = {t: (c, screened(s)) for t, (c, s) in state["pending"].items()}
        self._done = [(c, screened(s), float(k)) for c, s, k in state["done"]]
        self._tried = set(state["tried"])
        self._observations = [(c, t, k) for c, t, k in state["observations"]]
        self.origins = state["origins"]
        self.screened = int(state["screened"])
        set_rng_state(self._rng, state["rng"])


@register_searcher(
    "sieve",
    "Sieve: screens many candidates on the device and by an accuracy proxy, fine-tunes the best expected feasible",
)
def _sieve(s: SearchSettings) -> Searcher:
    if not s.constrained:
        raise UserError(NEEDS_CONSTRAINT)
    return Sieve(
        s.params, seed=s.seed, pool=s.screen, step=max(2, s.screen // 4), diagonal=min(15, s.screen // 3), aim=s.aim
    )
