"""Confirmation: the search's best candidates fine-tuned again with other seeds before one is named the pick.

One fine-tune is no answer near a threshold: on digits' 359 validation images
one image is 0.28 points, and the same architecture fine-tuned with another
seed moves by more than that. A search that keeps the best of many single
fine-tunes keeps the luckiest (the winner's curse). So ``--confirm N`` keeps
N of the ``--num-samples`` fine-tunes back from the searcher. When every
search trial has finished, the candidates (search trials that cleared the
threshold, best single-run score first) are fine-tuned again,
``--confirm-seeds`` times each, with the experiment's seed plus
``SEED_STRIDE`` times the repeat's number. A candidate *holds* when every run
finished and the mean of its judged top-1s (its search run's and its
repeats') clears the threshold. The first candidate in that order that holds
ends the search, and is the pick; budget left over is not spent. A candidate
that fails is infeasible however well its search run did.

Both sides use the same rule (``next_run``): the searcher, to choose what to
run next, and the driver, to tell from the results whether the search ended
or was interrupted.
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
    "REPEAT",
    "SEED_STRIDE",
    "WAIT",
    "Candidate",
    "add_search_run",
    "annotate",
    "candidates_from_rows",
    "config_key",
    "next_run",
    "resolve_reserve",
]

SEED_STRIDE = 1000  # repeat k fine-tunes with seed + k * SEED_STRIDE: clear of neighbouring --seed values
WAIT, FINISHED = "wait", "finished"
AUTO_SHARE = 5  # the default keeps a fifth of the fine-tunes for confirmation


@dataclass
class Candidate:
    """A configuration that cleared the threshold in its search run, and what its repeats found."""

    key: str
    config: dict[str, Any]
    score: float  # its search run's (the order candidates are confirmed in)
    constraints: list[float] = field(default_factory=list)  # judged top-1 - threshold of each run; NaN: no result
    issued: int = 0  # repeats started
    search_runs: int = 1  # runs of this configuration by the searcher (one, unless it proposed it twice)

    def runs_out(self) -> int:
        """Repeats started whose result has not come back."""
        return self.issued - (len(self.constraints) - self.search_runs)

    def decided(self, seeds: int) -> bool:
        return self.issued >= seeds and self.runs_out() == 0

    def holds(self) -> bool:
        """Every run finished and the mean clears the threshold."""
        values = self.constraints
        return bool(values) and all(finite(v) for v in values) and sum(values) / len(values) >= 0


def config_key(config: dict[str, Any]) -> str:
    """The configuration without its repeat number: the runs of one candidate share it."""
    return json.dumps({k: config[k] for k in sorted(config) if k != REPEAT}, sort_keys=True, default=str)


def add_search_run(by_key: dict[str, Candidate], config: dict[str, Any], score: float, constraint: float) -> None:
    """A search trial that cleared the threshold: a new candidate, or one more run of a configuration the
    searcher proposed twice (both runs count)."""
    key = config_key(config)
    if key in by_key:
        by_key[key].constraints.append(constraint)
        by_key[key].search_runs += 1
    else:
        by_key[key] = Candidate(key, dict(config), score, [constraint])


def next_run(ordered: list[Candidate], seeds: int, budget_left: int) -> Candidate | str:
    """The candidate to fine-tune once more, or ``WAIT`` (results still out decide it) or ``FINISHED``.

    ``ordered``: best single-run score first. Candidates are confirmed in that
    order; a later one starts while an earlier one's repeats are running, so
    parallel workers stay busy, but none after a candidate that already holds.
    """
    if budget_left <= 0:
        return FINISHED
    waiting = False
    for c in ordered:
        if c.issued < seeds:
            return c
        if not c.decided(seeds):
            waiting = True
            continue
        if c.holds():
            break  # the pick, unless an earlier one still out holds as well
    return WAIT if waiting else FINISHED


def candidates_from_rows(rows: list[TrialRow]) -> tuple[list[Candidate], int]:
    """The candidates as the driver sees them after a search, best first, and the confirmation runs done."""
    by_key: dict[str, Candidate] = {}
    search = sorted((r for r in rows if not r.repeat), key=lambda r: -r.score)
    for r in search:
        if r.status == "ok" and r.outcome.feasible and finite(r.outcome.score):
            add_search_run(by_key, r.config, r.outcome.score, r.outcome.constraint)
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


def annotate(rows: list[TrialRow], seeds: int) -> tuple[list[Candidate], int]:
    """Mark the rows of every candidate that was repeated: ``runs`` (judged top-1 of each run, in order)
    and ``held``, which then decides their feasibility. Returns the candidates, best first, and the
    confirmation runs done."""
    candidates, done = candidates_from_rows(rows)
    by_key = {c.key: c for c in candidates if c.issued}
    for r in rows:
        c = by_key.get(config_key(r.config))
        if c is None:
            continue
        threshold = r.outcome.top1_judged - r.outcome.constraint if r.status == "ok" else math.nan
        if finite(threshold):
            r.runs = tuple(v + threshold for v in c.constraints)
        r.held = c.decided(seeds) and c.holds() if c.issued >= seeds else None
    return candidates, done


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
