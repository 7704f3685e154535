"""``ConstrainedBayesOpt``: Bayesian optimisation over bayesian-optimization 3.x.

Lifecycle (Ray Tune's ``Searcher`` contract): Tune calls ``suggest(trial_id)``
for each new trial, ``on_trial_complete(trial_id, result, error)`` when it
ends, and ``save``/``restore`` around interruptions. Each completed trial
registers (params, score, constraint) with bayes_opt, whose constraint model
learns the probability that ``constraint >= 0`` and whose acquisition is
expected improvement weighted by that probability. Errored trials and NaN or
infinite results never reach the optimiser.

Noise: a fine-tune's top-1 moves by about a point with its seed, as much as a
threshold's margin. Both GPs fit a white-noise term with their kernel, and the
improvement is measured from the best trial the models *believe* feasible
(posterior mean), not the best lucky observation (``noisy_expected_improvement``).

Parallel trials (kriging believer): while trials are pending, the GPs are
fitted on the finished ones, each pending point is registered with what the
GPs predict for it (score and constraint), and the acquisition is maximised
on that augmented set. Its variance collapses at pending points, so the next
proposal goes elsewhere, where the model still expects improvement: four
concurrent suggestions are four informative, different points, not four
copies of the same argmax (``tests/test_search.py``).
"""

from __future__ import annotations

import functools
import itertools
import warnings
from typing import Any

import numpy as np
from ray.tune.search import Searcher

from edge_tune.params import Param, uniform_point
from edge_tune.search.observe import observed
from edge_tune.search.registry import SearchSettings, register_searcher
from edge_tune.search.state import JsonState, rng_state, set_rng_state

__all__ = ["ConstrainedBayesOpt"]


class ConstrainedBayesOpt(JsonState, Searcher):
    """Bayesian optimisation with ``constraint >= 0`` modelled, not penalised.

    >>> s = ConstrainedBayesOpt({"r": Param("r", "float", 0.0, 0.9)}, initial_points=2)
    >>> cfg = s.suggest("t1")
    >>> s.on_trial_complete("t1", {"score": 0.3, "constraint": 0.5})
    """

    def __init__(
        self,
        params: dict[str, Param],
        metric: str = "score",
        mode: str = "max",
        constraint_metric: str = "constraint",
        initial_points: int = 4,
        seed: int = 0,
        noise: float = 1e-2,
        min_distance: float = 0.05,
        constrained: bool = True,
        believer: bool = True,
        uniform_points: int = 3,
    ) -> None:
        super().__init__(metric=metric, mode=mode)
        self.params = params
        self.constraint_metric = constraint_metric
        self.initial_points = initial_points  # trials before the GP proposes: uniform, then random
        # The first of them lie on the uniform diagonal, every numeric parameter at the same
        # fraction of its range: the sweep a user would run by hand, and the strong baseline the
        # pruning literature measures against. They bisect it for the threshold (``_fraction``).
        self.uniform_points = min(uniform_points, initial_points)
        self.seed = seed
        # Both GPs model noisy measurements (speed-up CV of a few %, top-1 moving by
        # about a point with the fine-tune's seed): each learns its noise level
        # (a white-noise term, fitted with the kernel) starting from this one, on the
        # normalised targets. A fixed small noise lets one lucky fine-tune decide.
        self.noise = noise
        # Pruning ratios round to channel counts, so points closer than this
        # (L-inf, as a fraction of each range) to one already run or pending are
        # mostly the same network (one channel of a 16-wide layer is 6% of it):
        # they are asked for again with the point held as pending, never run twice.
        self.min_distance = min_distance
        # False: a plain (unconstrained) maximisation of the metric, for the
        # combined accuracy-latency objective, which has no constraint.
        self.constrained = constrained
        self.believer = believer  # kriging believer on pending points (off only to show why it is on)
        self.origins: list[str] = []  # per suggestion: random | model | feasibility | random (too close)
        self._pending: dict[str, dict[str, Any]] = {}
        self._diagonal: dict[str, float] = {}  # pending uniform trials: their fraction of every range
        self._diagonal_seen: list[tuple[float, bool]] = []  # finished ones: (fraction, constraint held)
        self._diagonal_failed: list[float] = []  # errored ones: cut the bracket like pending ones, for good
        self._observations: list[tuple[dict[str, Any], float, float]] = []
        self._failed: list[dict[str, Any]] = []  # errored trials: learnt nothing, but never proposed again
        self._suggested = 0
        self._optimizer = self._new_optimizer()

    def _new_optimizer(self, random_state: Any = None) -> Any:
        from bayes_opt import BayesianOptimization
        from bayes_opt.parameter import wrap_kernel
        from scipy.optimize import NonlinearConstraint

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # bayes_opt warns that typed params are "experimental"
            opt = BayesianOptimization(
                f=None,
                pbounds={n: p.bo_bounds() for n, p in self.params.items()},
                constraint=NonlinearConstraint(None, 0.0, np.inf) if self.constrained else None,
                random_state=random_state if random_state is not None else self.seed,
                verbose=0,
                allow_duplicate_points=True,
            )
        unit = UnitCube(opt.space)
        opt._gp.set_params(kernel=wrap_kernel(self._kernel(), unit), alpha=1e-6)
        # bayes_opt has no public setter for the constraint's GPs.
        for gp in opt.constraint._model if opt.constraint is not None else ():
            gp.set_params(kernel=wrap_kernel(self._kernel(), unit), alpha=1e-6)
        opt._acquisition_function = noisy_expected_improvement(xi=0.01)
        return opt

    def _kernel(self) -> Any:
        """Amplitude x Matern 5/2 + white noise, on inputs scaled to the unit cube.

        bayes_opt's default (a bare Matern, amplitude fixed at 1, length scale free down
        to 1e-5, on raw units) collapses its length scale on noisy data: far from the
        trials it then predicts the prior's full variance and expected improvement sends
        trials to the corners of the space. The length scale is kept at 0.1 or more of
        each range (a few channels of a pruned layer), the amplitude and the noise are fitted.
        """
        from sklearn.gaussian_process.kernels import ConstantKernel, Matern, WhiteKernel

        return ConstantKernel(1.0, (1e-2, 1e2)) * Matern(
            length_scale=0.5, length_scale_bounds=(0.1, 10.0), nu=2.5
        ) + WhiteKernel(self.noise, (1e-6, 1.0))

    def _typed(self, raw: dict[str, Any]) -> dict[str, Any]:
        return {name: p.typed(raw[name]) for name, p in self.params.items()}

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if self._suggested < self.uniform_points:
                t = self._fraction()
                config, origin = uniform_point(self.params, t, self._suggested), "uniform"
                self._diagonal[trial_id] = t
            elif self._suggested < self.initial_points or len(self._observations) < 2:
                config, origin = self._random(), "random"
            else:
                config, origin = self._propose()
                held: list[dict[str, Any]] = []  # too-close proposals, believed like pending ones
                for _ in range(3 if self.believer else 0):
                    if not self._too_close(config, held):
                        break
                    held.append(config)
                    config, origin = self._propose(held)
                if self._too_close(config):
                    config, origin = self._random(), "random (too close)"
        self.origins.append(origin)
        self._pending[trial_id] = config
        self._suggested += 1
        return dict(config)

    def _propose(self, held: list[dict[str, Any]] | None = None) -> tuple[dict[str, Any], str]:
        """The model's next point (typed), with pending and ``held`` points believed."""
        from bayes_opt.exception import NoValidPointRegisteredError

        pending = [*self._pending.values(), *(held or [])]
        optimizer = self._with_believed(pending) if self.believer and pending else self._optimizer
        try:
            return self._typed(optimizer.suggest()), "model"
        except NoValidPointRegisteredError:
            return self._typed(self._most_likely_feasible(optimizer)), "feasibility"

    def _with_believed(self, pending: list[dict[str, Any]]) -> Any:
        """A copy of the optimiser that also holds each pending point at the GPs' prediction for it."""
        real = self._optimizer
        real.acquisition_function._fit_gp(real._gp, real.space)
        xs = np.array([real.space.params_to_array(c) for c in pending])
        scores = real._gp.predict(xs)
        constraints = real.constraint.approx(xs).reshape(len(xs)) if self.constrained else [None] * len(xs)
        believed = self._new_optimizer(random_state=real._random_state)  # shares the RNG: stays deterministic
        for config, target, constraint in self._observations:
            believed.register(config, target, constraint_value=constraint if self.constrained else None)
        for config, score, constraint in zip(pending, scores, constraints, strict=True):
            c = None if constraint is None else float(constraint)
            believed.register(config, float(score), constraint_value=c)
        return believed

    def _most_likely_feasible(self, optimizer: Any, candidates: int = 2000) -> dict[str, Any]:
        """Before any trial is feasible, expected improvement is undefined: go where
        the constraint model gives the highest probability of feasibility."""
        space = optimizer.space
        space.constraint.fit(space.params, space._constraint_values)
        xs = np.array([space.random_sample(random_state=optimizer._random_state) for _ in range(candidates)])
        return space.array_to_params(xs[int(np.argmax(space.constraint.predict(xs)))])

    def _fraction(self) -> float:
        """The next point of the uniform diagonal, as a fraction of every range: a bisection for the threshold.

        Along the diagonal every ratio grows together, so latency falls and accuracy falls
        with it: the best uniform point is the largest fraction that still clears the
        threshold. The bracket is [largest fraction seen feasible below the smallest seen
        infeasible, that smallest] (0 and 1 before any); pending uniform trials cut it too,
        and the next fraction is the middle of the widest piece, the upper one on a tie.
        In order, one at a time: 1/2, then 3/4 if it held or 1/4 if not, then 1/8 finer;
        with several pending at once (no outcome yet): 1/2, 3/4, 1/4. Without a constraint
        (the combined objective) nothing is learnt from the outcomes, only the cuts.
        """
        seen, pending = self._diagonal_seen, [*self._diagonal.values(), *self._diagonal_failed]
        if self.constrained:
            high = min((t for t, ok in seen if not ok), default=1.0)
            low = max((t for t, ok in seen if ok and t < high), default=0.0)
            cuts = sorted({low, high, *(t for t in pending if low < t < high)})
        else:
            cuts = sorted({0.0, 1.0, *pending, *(t for t, _ in seen)})
        a, b = max(itertools.pairwise(cuts), key=lambda g: (round(g[1] - g[0], 9), g[0]))
        return (a + b) / 2

    def _random(self, tries: int = 20) -> dict[str, Any]:
        for _ in range(tries):
            config = self._typed(self._optimizer.random_sample(1)[0])
            if not self._too_close(config):
                break
        return config

    def _too_close(self, config: dict[str, Any], held: list[dict[str, Any]] | None = None) -> bool:
        space = self._optimizer.space
        span = np.ptp(space.bounds, axis=1)
        span[span == 0] = 1.0
        x = space.params_to_array(config)
        observed = (c for c, _, _ in self._observations)
        others = [*self._pending.values(), *(held or []), *observed, *self._failed]
        return any(float(np.max(np.abs(x - space.params_to_array(o)) / span)) < self.min_distance for o in others)

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False) -> None:
        config = self._pending.pop(trial_id, None)
        fraction = self._diagonal.pop(trial_id, None)
        seen = observed(self, result, error, self._observations)
        if config is not None and seen is not None:
            self._record(config, *seen)
            if fraction is not None:
                self._diagonal_seen.append((fraction, seen[1] >= 0))
        elif config is not None and error:
            self._failed.append(config)
            if fraction is not None:
                self._diagonal_failed.append(fraction)

    def _record(self, config: dict[str, Any], target: float, constraint: float) -> None:
        self._observations.append((config, target, constraint))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self._optimizer.register(config, target, constraint_value=constraint if self.constrained else None)

    @property
    def observations(self) -> list[tuple[dict[str, Any], float, float]]:
        """(config, target as maximised, constraint) for every trial the optimiser saw."""
        return list(self._observations)

    def state(self) -> dict[str, Any]:
        return {
            "observations": self._observations,
            "failed": self._failed,
            "pending": self._pending,
            "diagonal": self._diagonal,
            "diagonal_seen": self._diagonal_seen,
            "diagonal_failed": self._diagonal_failed,
            "suggested": self._suggested,
            "origins": self.origins,
            "rng": rng_state(self._optimizer._random_state),
        }

    def load_state(self, state: dict[str, Any]) -> None:
        self._optimizer = self._new_optimizer()
        self._observations = []
        for config, target, constraint in state["observations"]:
            self._record(config, target, constraint)
        self._failed = state["failed"]
        self._pending = state["pending"]
        self._diagonal = state["diagonal"]
        self._diagonal_seen = [(t, ok) for t, ok in state["diagonal_seen"]]
        self._diagonal_failed = state["diagonal_failed"]
        self._suggested = state["suggested"]
        self.origins = state["origins"]
        set_rng_state(self._optimizer._random_state, state["rng"])
        print(f"[edge_tune] searcher restored with {len(self._observations)} observation(s)", flush=True)


class UnitCube:
    """The GP's input transform: bayes_opt's own (typed parameters), then every column scaled to [0, 1]."""

    def __init__(self, space: Any) -> None:
        self.space = space
        self.low = space.bounds[:, 0]
        span = np.ptp(space.bounds, axis=1)
        self.span = np.where(span > 0, span, 1.0)

    def __call__(self, x: Any) -> Any:
        return (self.space.kernel_transform(x) - self.low) / self.span


@functools.cache
def _noisy_ei() -> type:
    """The class below, built on first use: bayes_opt (and sklearn with it) is imported late."""
    from bayes_opt.acquisition import AcquisitionFunction, ExpectedImprovement
    from bayes_opt.exception import NoValidPointRegisteredError

    class Noisy(ExpectedImprovement):
        """Expected improvement over the best *predicted* feasible trial, not the best observed.

        bayes_opt's incumbent is the highest score among trials whose observed constraint
        holds. With noisy accuracy, one lucky fine-tune of an infeasible, much faster
        configuration becomes that incumbent, no other point can improve on it, and the
        search stalls beside it. Here the incumbent is the highest posterior mean of the
        score among trials the constraint model believes feasible (probability >= 1/2).

        The acquisition's maximum is sought as bayes_opt does (10,000 random points, then
        L-BFGS from the best of them) but from 5 starts, not 10: the fitted kernels make
        the surface smooth enough that each start takes more steps, and the replay
        (docs/benchmarks/search.md) measured 5 as good as 10 in half the time.
        """

        def suggest(  # type: ignore[override]
            self,
            gp: Any,
            target_space: Any,
            n_random: int = 10_000,
            n_smart: int = 5,
            fit_gp: bool = True,
            random_state: Any = None,
        ) -> Any:
            if fit_gp:
                self._fit_gp(gp=gp, target_space=target_space)
            xs = target_space.params
            believed = np.ones(len(xs), dtype=bool)
            if target_space.constraint is not None:
                believed = target_space.constraint.predict(xs) >= 0.5
            if not believed.any():
                raise NoValidPointRegisteredError("no trial is believed feasible yet")
            self.y_max = float(gp.predict(xs)[believed].max())  # type: ignore[assignment]
            x = AcquisitionFunction.suggest(
                self, gp, target_space, n_random=n_random, n_smart=n_smart, fit_gp=False, random_state=random_state
            )
            self.decay_exploration()
            return x

    return Noisy


def noisy_expected_improvement(xi: float) -> Any:
    return _noisy_ei()(xi=xi)


@register_searcher(
    "bayesopt",
    "ConstrainedBayesOpt: Gaussian processes for the score and the threshold's constraint",
)
def _bayesopt(s: SearchSettings) -> Searcher:
    return ConstrainedBayesOpt(s.params, initial_points=s.initial_points, seed=s.seed, constrained=s.constrained)
