"""Confirmation: the search's best candidates fine-tuned again with other seeds before one is named the pick.

One fine-tune is no answer near a threshold: on digits' 359 validation images
one image is 0.28 points, and the same architecture fine-tuned with another
seed moves by more than that. A search that keeps the best of many single
fine-tunes keeps the luckiest (the winner's curse). So ``--confirm N`` keeps
N of the ``--num-samples`` fine-tunes back from the searcher. When every
search trial has finished, the candidates (search trials that cleared the
threshold) are fine-tuned again, ``--confirm-seeds`` times each, with the
experiment's seed plus ``SEED_STRIDE`` times the repeat's number.

A candidate *holds* when every run finished and the mean of its judged
top-1s (its search run's and its repeats') clears the threshold by a margin:
``--confirm-margin`` standard errors of that mean. A mean that clears the
threshold by less than its own noise would, fine-tuned again, fall under it
about half the time. The standard error comes from the candidate's own runs
(``Candidate.sd``), their spread shrunk towards ``PRIOR_SD`` with the weight
of ``PRIOR_DOF`` runs, so three runs that happen to agree do not make a
narrow bound. Its own runs only: with a spread pooled over candidates, a
candidate that failed could hold later, once other candidates' runs had
narrowed the pool (measured: a sweep's 1.73x pick failed, then held after
the next candidate's two runs agreed, and fell 0.17 points under the
threshold over five runs). A decision, once its runs are in, stands. The
search run counts in the spread; it was chosen for scoring well, so it
widens the spread: on the safe side.

Which candidate next: the one with the highest ``P(hold) * ln(speed-up)``,
where ``P(hold)`` is the chance that its runs to come leave a mean that
holds (``hold_chance``), under the seed noise pooled over every candidate
run more than once (``noise_sd``, also reported): the order may use all
that is known, since it decides nothing. The fastest single run is often
the luckiest; a slightly slower candidate far above the threshold is the
better bet. Once a candidate holds, no other is started; with nothing still
running it ends the search and is the pick, and the budget left over is not
spent. A candidate that fails is infeasible however well its search run did.

Both sides use the same rule (``next_run``): the searcher, to choose what to
run next, and the driver, to tell from the results whether the search ended
or was interrupted. It reads only the results, so both agree.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

from edge_tune.errors import UserError
from edge_tune.outcome import REPEAT, TrialRow, finite

__all__ = [
    "FINISHED",
    "MARGIN",
    "REPEAT",
    "SEED_STRIDE",
    "WAIT",
    "Candidate",
    "add_search_run",
    "aim",
    "annotate",
    "candidates_from_rows",
    "check_margin",
    "config_key",
    "held",
    "hold_chance",
    "next_run",
    "noise_sd",
    "resolve_reserve",
]

SEED_STRIDE = 1000  # repeat k fine-tunes with seed + k * SEED_STRIDE: clear of neighbouring --seed values
WAIT, FINISHED = "wait", "finished"
AUTO_SHARE = 5  # the default keeps a fifth of the fine-tunes for confirmation
MARGIN = 1.0  # --confirm-margin: standard errors of its mean a candidate must clear the threshold by
PRIOR_SD = 0.5  # top-1 points: the seed noise assumed before any candidate has two runs
PRIOR_DOF = 2  # the weight of that assumption, in runs


@dataclass
class Candidate:
    """A configuration that cleared the threshold in its search run, and what its repeats found."""

    key: str
    config: dict[str, Any]
    score: float  # its search run's (the order candidates are confirmed in)
    constraints: list[float] = field(default_factory=list)  # judged top-1 - threshold of each run; NaN: no result
    issued: int = 0  # repeats started
    search_runs: int = 1  # runs of this configuration by the searcher (one, unless it proposed it twice)
    gain: float = math.nan  # ln(speed-up) of its search run

    @property
    def value(self) -> float:
        """What confirming it would gain: ln(speed-up), else its score."""
        return self.gain if finite(self.gain) else self.score

    def runs_out(self) -> int:
        """Repeats started whose result has not come back."""
        return self.issued - (len(self.constraints) - self.search_runs)

    def decided(self, seeds: int) -> bool:
        return self.issued >= seeds and self.runs_out() == 0

    def sd(self) -> float:
        """Seed noise of one run, points: the spread of its own finished runs, shrunk towards ``PRIOR_SD``
        with the weight of ``PRIOR_DOF`` runs."""
        return noise_sd([self])

    def lower(self, margin: float) -> float:
        """The mean of its constraints less ``margin`` standard errors; NaN when a run has no result."""
        values = self.constraints
        if not values or not all(finite(v) for v in values):
            return math.nan
        return sum(values) / len(values) - margin * self.sd() / math.sqrt(len(values))

    def holds(self, margin: float = 0.0) -> bool:
        """Every run finished and the mean clears the threshold by ``margin`` standard errors."""
        return self.lower(margin) >= 0


def config_key(config: dict[str, Any]) -> str:
    """The configuration without its repeat number: the runs of one candidate share it."""
    return json.dumps({k: config[k] for k in sorted(config) if k != REPEAT}, sort_keys=True, default=str)


def add_search_run(
    by_key: dict[str, Candidate], config: dict[str, Any], score: float, constraint: float, speedup: float
) -> None:
    """A search trial that cleared the threshold: a new candidate, or one more run of a configuration the
    searcher proposed twice (both runs count)."""
    key = config_key(config)
    if key in by_key:
        by_key[key].constraints.append(constraint)
        by_key[key].search_runs += 1
    else:
        gain = math.log(speedup) if finite(speedup) and speedup > 0 else math.nan
        by_key[key] = Candidate(key, dict(config), score, [constraint], gain=gain)


def noise_sd(candidates: list[Candidate]) -> float:
    """Seed noise of a fine-tuned top-1, points: the pooled spread of the candidates' finished runs,
    shrunk towards ``PRIOR_SD`` with the weight of ``PRIOR_DOF`` runs."""
    squares, dof = PRIOR_DOF * PRIOR_SD**2, PRIOR_DOF
    for c in candidates:
        values = [v for v in c.constraints if finite(v)]
        if len(values) >= 2:
            mean = sum(values) / len(values)
            squares += sum((v - mean) ** 2 for v in values)
            dof += len(values) - 1
    return math.sqrt(squares / dof)


def hold_chance(c: Candidate, seeds: int, margin: float, sd: float) -> float:
    """The chance that ``c`` holds once all its repeats are in, if its true mean is its runs' mean so far
    and each run scatters by ``sd`` (the winner's curse is left to the margin)."""
    if not all(finite(v) for v in c.constraints) or not c.constraints:
        return 0.0
    n = len(c.constraints)
    k = max(0, c.search_runs + seeds - n)  # runs still to come, started or not
    if k == 0:
        return float(c.holds(margin))
    total = n + k
    mean = sum(c.constraints) / n
    # Holds iff the k runs to come sum to at least margin*sd*sqrt(total) - n*mean; that sum is normal
    # with mean k*mean and variance k*sd^2 (each run) + k^2*sd^2/n (the mean is not known).
    spread = sd * math.sqrt(k + k * k / n)
    z = (total * mean - margin * sd * math.sqrt(total)) / spread
    return 0.5 * math.erfc(-z / math.sqrt(2))


def next_run(candidates: list[Candidate], seeds: int, budget_left: int, margin: float = MARGIN) -> Candidate | str:
    """The candidate to fine-tune once more, or ``WAIT`` (results still out decide it) or ``FINISHED``.

    A candidate whose repeats have begun is finished first; then the best
    ``hold_chance * ln(speed-up)`` is started, while others run, so parallel
    workers stay busy; none once a candidate holds.
    """
    if budget_left <= 0:
        return FINISHED
    out = any(c.runs_out() for c in candidates)
    if any(c.decided(seeds) and c.holds(margin) for c in candidates):
        return WAIT if out else FINISHED  # what is still out may hold as well, and be faster
    begun = [c for c in candidates if 0 < c.issued < seeds]
    if begun:
        return begun[0]
    fresh = [c for c in candidates if c.issued == 0]
    if fresh:
        sd = noise_sd(candidates)
        return max(fresh, key=lambda c: (hold_chance(c, seeds, margin, sd) * c.value, c.score))
    return WAIT if out else FINISHED


def held(candidates: list[Candidate], seeds: int, margin: float = MARGIN) -> list[Candidate]:
    """The candidates whose runs are all in and hold, fastest first."""
    return sorted((c for c in candidates if c.decided(seeds) and c.holds(margin)), key=lambda c: -c.value)


def candidates_from_rows(rows: list[TrialRow]) -> tuple[list[Candidate], int]:
    """The candidates as the driver sees them after a search, best first, and the confirmation runs done."""
    by_key: dict[str, Candidate] = {}
    search = sorted((r for r in rows if not r.repeat), key=lambda r: -r.score)
    for r in search:
        if r.status == "ok" and r.outcome.feasible and finite(r.outcome.score):
            add_search_run(by_key, r.config, r.outcome.score, r.outcome.constraint, r.outcome.speedup)
    done = 0
    for r in rows:
        if r.repeat and (r.status != "error" or r.error != "no final result"):  # an interrupted one reruns
            done += 1
            c = by_key.get(config_key(r.config))
            if c is not None:
                c.issued += 1
                c.constraints.append(_constraint(r))
    return list(by_key.values()), done


def _constraint(r: TrialRow) -> float:
    return r.outcome.constraint if r.status == "ok" and finite(r.outcome.constraint) else math.nan


def annotate(rows: list[TrialRow], seeds: int, margin: float = MARGIN) -> tuple[list[Candidate], int, float]:
    """Mark the rows of every candidate that was repeated: ``runs`` (judged top-1 of each run, in order),
    ``top1_lower`` (their mean less the margin) and ``held``, which then decides their feasibility.
    Returns the candidates, best single-run score first, the confirmation runs done, and the seed noise
    pooled over them (for the record: each candidate is judged on its own runs)."""
    candidates, done = candidates_from_rows(rows)
    sd = noise_sd(candidates)
    by_key = {c.key: c for c in candidates if c.issued}
    for r in rows:
        c = by_key.get(config_key(r.config))
        if c is None:
            continue
        threshold = r.outcome.top1_judged - r.outcome.constraint if r.status == "ok" else math.nan
        if finite(threshold):
            r.runs = tuple(v + threshold for v in c.constraints)
            r.top1_lower = c.lower(margin) + threshold
        r.held = c.decided(seeds) and c.holds(margin) if c.issued >= seeds else None
    return candidates, done, sd


def aim(margin: float, seeds: int) -> float:
    """Points above the threshold a candidate's expected top-1 must lie for it to hold: ``margin`` standard
    errors of a mean over its 1 + ``seeds`` runs at the prior seed noise. What a searcher that models
    accuracy (Sieve) should aim at when its picks are confirmed."""
    return margin * PRIOR_SD / math.sqrt(1 + seeds)


def check_margin(margin: float) -> float:
    """``--confirm-margin``, refused by name when it is not a number of standard errors."""
    if not finite(margin) or margin < 0:
        raise UserError(
            f"--confirm-margin {margin}: standard errors of its mean top-1 a candidate must clear the threshold "
            "by; a finite number, 0 or more (0: the mean alone decides)"
        )
    return margin


def resolve_reserve(confirm: int | None, seeds: int, num_samples: int, searched: bool) -> int:
    """Fine-tunes kept back for confirmation: ``--confirm``, else a fifth of ``--num-samples`` rounded down to
    whole candidates (none below ten trials). A user error names the flag when it cannot be met."""
    if seeds < 1:
        raise UserError(f"--confirm-seeds {seeds}: at least 1 (the repeats each candidate is fine-tuned again)")
    if confirm is None:
        return (num_samples // AUTO_SHARE) // seeds * seeds if searched else 0
    if confirm == 0:
        return 0
    if not searched:
        raise UserError(
            f"--confirm {confirm}: the space searches nothing (one fixed configuration), so there is no "
            "candidate to confirm; leave --confirm out or give it 0"
        )
    if confirm < 0 or confirm % seeds:
        raise UserError(
            f"--confirm {confirm}: fine-tunes kept back for confirmation must be a multiple of "
            f"--confirm-seeds ({seeds}), one whole candidate each time, and not negative"
        )
    if confirm >= num_samples:
        raise UserError(
            f"--confirm {confirm}: keeps back every one of the --num-samples {num_samples} fine-tunes; the search "
            "needs at least one; lower --confirm or raise --num-samples"
        )
    return confirm
