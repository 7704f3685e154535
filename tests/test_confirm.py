"""Confirmation on a synthetic objective: the rule, the searcher around any searcher, and the rows it leaves.

The synthetic problem: two ratios; speed-up grows with both; the fine-tuned top-1 falls with them and
carries seed noise of 0.5 points, so near the threshold a single fine-tune often clears it by luck.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from edge_tune.confirm import (
    FINISHED,
    WAIT,
    Candidate,
    annotate,
    check_margin,
    config_key,
    held,
    hold_chance,
    next_run,
    noise_sd,
    resolve_reserve,
)
from edge_tune.errors import UserError
from edge_tune.outcome import REPEAT, TrialOutcome, TrialRow
from edge_tune.params import Param
from edge_tune.results import closest_infeasible, rank
from edge_tune.search import RandomSearch, SearchSettings, make_searcher
from edge_tune.search.confirming import Confirming

PARAMS = {n: Param(n, "float", 0.0, 0.9) for n in ("a", "b")}
THRESHOLD = 97.0


def truth(config: dict) -> tuple[float, float]:
    """(speed-up, expected top-1) of a configuration."""
    a, b = config["a"], config["b"]
    return 1.0 + a + 0.5 * b, 99.0 - 3.0 * a**2 - 1.0 * b**2


def result(config: dict, rng: np.random.Generator) -> dict:
    speed, mean = truth(config)
    top1 = mean + rng.normal(0, 0.5)
    feasible = top1 >= THRESHOLD
    score = math.log(speed) + (top1 - THRESHOLD) / 100
    return {
        "final": True,
        "score": score,
        "constraint": top1 - THRESHOLD,
        "feasible": feasible,
        "top1": top1,
        "speedup": speed,
    }


def drive(searcher, trials: int, rng: np.random.Generator, parallel: int = 1) -> list[tuple[str, dict, dict]]:
    """Tune's loop, ``parallel`` trials at a time, finishing the oldest first; (trial, config, result) in order."""
    done, running, k = [], [], 0
    while True:
        while len(running) < parallel and k < trials:
            config = searcher.suggest(f"t{k}")
            if config is None or config == "FINISHED":
                break
            running.append((f"t{k}", config))
            k += 1
        if not running:  # a searcher waiting with nothing out would hang Tune: this returns instead
            return done
        trial, config = running.pop(0)
        r = result(config, rng)
        searcher.on_trial_complete(trial, r)
        done.append((trial, config, r))


def test_the_rule_bets_on_what_will_hold_waits_for_what_is_out_and_stops_once_one_holds():
    fast = Candidate("fast", {"a": 0.9}, 1.0, [0.2], gain=math.log(1.5))  # best single run, 0.2 points clear
    slow = Candidate("slow", {"a": 0.5}, 0.5, [1.5], gain=math.log(1.3))  # 1.5 points clear
    sd = noise_sd([fast, slow])
    assert sd == pytest.approx(0.5)  # no candidate run twice: the prior
    assert hold_chance(fast, 2, 1.0, sd) < 0.5 < 0.99 < hold_chance(slow, 2, 1.0, sd)
    assert next_run([fast, slow], seeds=2, budget_left=4) is slow  # the better bet, not the luckier run
    slow.issued = 1
    assert next_run([fast, slow], 2, 3) is slow  # a candidate begun is finished first
    slow.issued = 2  # both repeats running
    assert next_run([fast, slow], 2, 2) is fast  # the workers stay busy with the next candidate
    fast.issued = 2
    slow.constraints += [1.0, 0.8]  # holds, but the faster one is still out
    assert next_run([fast, slow], 2, 2) == WAIT
    assert next_run([fast, slow], 2, 0) == FINISHED  # no budget: nothing more is started
    fast.constraints += [-0.9, 0.1]  # mean -0.2: the lucky first run does not hold
    assert not fast.holds() and slow.holds(1.0)
    assert next_run([fast, slow], 2, 2) == FINISHED and held([fast, slow], 2) == [slow]
    fast.constraints[-1] = math.nan  # a repeat that errored: never held
    assert not fast.holds() and hold_chance(fast, 2, 1.0, sd) == 0.0


def test_the_margin_asks_the_mean_to_clear_the_threshold_by_its_noise():
    close = Candidate("close", {"a": 0.8}, 1.0, [0.3, 0.0, 0.0], issued=2, gain=math.log(1.6))
    sure = Candidate("sure", {"a": 0.4}, 0.5, [1.2, 0.9, 1.0], issued=2, gain=math.log(1.2))
    pooled = noise_sd([close, sure])  # (2 * 0.5^2 + 0.06 + 0.0467) / (2 + 4)
    assert pooled == pytest.approx(math.sqrt((0.5 + 0.06 + 0.14 / 3) / 6), rel=1e-3)
    assert close.sd() == pytest.approx(math.sqrt((0.5 + 0.06) / 4))  # its own runs, shrunk towards 0.5
    assert close.holds() and not close.holds(1.0)  # a mean 0.1 clear is not clear of its noise
    assert close.lower(1.0) == pytest.approx(0.1 - close.sd() / math.sqrt(3))
    assert sure.holds(1.0) and held([close, sure], 2) == [sure]
    assert held([close, sure], 2, margin=0.0) == [close, sure]  # fastest first
    assert next_run([close, sure], 2, 2, margin=0.0) == FINISHED
    # A decision stands: runs of other candidates that agree closely narrow the pooled noise, not its bound.
    tight = [Candidate(f"t{k}", {"a": 0.1 * k}, 0.1, [2.0, 2.0, 2.0], issued=2) for k in range(5)]
    assert noise_sd([close, *tight]) < 0.25 < close.sd() and not close.holds(1.0)
    assert check_margin(0.0) == 0.0 and check_margin(1.5) == 1.5
    for bad in (-1.0, math.nan, math.inf):
        with pytest.raises(UserError, match="--confirm-margin"):
            check_margin(bad)


def test_the_searcher_keeps_back_its_budget_learns_nothing_from_repeats_and_ends_when_one_holds():
    rng = np.random.default_rng(0)
    inner = RandomSearch(PARAMS, seed=0)
    searcher = Confirming(inner, search=12, reserve=6, seeds=2)
    done = drive(searcher, 18, rng, parallel=3)
    search = [c for _, c, _ in done if REPEAT not in c]
    repeats = [c for _, c, _ in done if REPEAT in c]
    assert len(search) == 12 and len(inner.observations) == 12  # the inner searcher saw only its own trials
    assert repeats, "no candidate was confirmed"
    keys = {config_key(c) for c in search}
    assert all(config_key(c) in keys for c in repeats)  # a repeat is of a search configuration
    # Repeats begin only after every search trial finished, with the best bet on the search runs alone.
    first_repeat = next(i for i, (_, c, _) in enumerate(done) if REPEAT in c)
    assert sum(REPEAT not in c for _, c, _ in done[first_repeat:]) == 0
    fresh = [
        Candidate(c.key, c.config, c.score, c.constraints[: c.search_runs], search_runs=c.search_runs, gain=c.gain)
        for c in searcher.candidates
    ]
    first = next_run(fresh, 2, 6)
    assert isinstance(first, Candidate) and first.key == config_key(repeats[0])
    assert searcher.suggest("after") == "FINISHED" and len(repeats) <= 6
    holding = held(searcher.candidates, 2)
    assert holding, "no candidate held"
    if len(repeats) < 6:  # it ended early: because one held
        assert holding[0].key in {config_key(c) for c in repeats}


def test_over_seeds_confirmation_picks_what_holds_where_single_runs_pick_luck():
    """Over 20 seeds of the synthetic problem: the pick a single fine-tune names is often infeasible in
    expectation (the winner's curse); the mean of three less often; the margin less often still."""
    single: list[bool] = []
    confirmed: dict[float, list[bool]] = {0.0: [], 1.0: []}
    for seed in range(20):
        rng = np.random.default_rng(seed)
        plain = drive(RandomSearch(PARAMS, seed=seed), 18, rng)
        best = max((c for _, c, r in plain if r["feasible"]), key=lambda c: truth(c)[0], default=None)
        if best is not None:
            single.append(truth(best)[1] >= THRESHOLD)
        for margin, picks in confirmed.items():
            searcher = Confirming(RandomSearch(PARAMS, seed=seed), search=12, reserve=6, seeds=2, margin=margin)
            drive(searcher, 18, np.random.default_rng(seed))
            holding = held(searcher.candidates, 2, margin)
            if holding:
                picks.append(truth(holding[0].config)[1] >= THRESHOLD)
    share = {m: sum(p) / len(p) for m, p in confirmed.items()}
    print(
        f"single runs: {sum(single)}/{len(single)} picks truly feasible; "
        + "; ".join(f"confirmed, margin {m:g} SE: {sum(p)}/{len(p)}" for m, p in confirmed.items())
    )
    assert all(len(p) >= 14 for p in confirmed.values())
    assert share[1.0] >= share[0.0] > sum(single) / len(single)


def test_state_saves_and_restores_mid_confirmation(tmp_path):
    rng = np.random.default_rng(3)
    a = Confirming(RandomSearch(PARAMS, seed=3), search=6, reserve=4, seeds=2)
    b = Confirming(RandomSearch(PARAMS, seed=3), search=6, reserve=4, seeds=2)
    for k in range(7):  # the whole search and the first repeat's suggestion
        config = a.suggest(f"t{k}")
        if k < 6:
            a.on_trial_complete(f"t{k}", result(config, rng))
    a.save(str(tmp_path / "state.json"))
    b.restore(str(tmp_path / "state.json"))
    assert b.suggest("t7") == a.suggest("t7") and b.candidates == a.candidates


def test_rows_carry_the_runs_and_their_mean_decides_feasibility():
    def row(trial: str, config: dict, top1: float) -> TrialRow:
        o = TrialOutcome(final=True, top1=top1, top1_device=top1, speedup=truth(config)[0], feasible=top1 >= 97.0)
        o.constraint, o.score = top1 - 97.0, math.log(o.speedup) + (top1 - 97.0) / 100
        return TrialRow(trial, "ok", config, o)

    fast, slow = {"a": 0.9, "b": 0.9}, {"a": 0.5, "b": 0.5}
    rows = [
        row("s1", fast, 97.3),
        row("s2", slow, 98.0),
        row("r1", {**fast, REPEAT: 1}, 96.1),
        row("r2", {**fast, REPEAT: 2}, 96.8),
        row("r3", {**slow, REPEAT: 1}, 97.6),
        row("r4", {**slow, REPEAT: 2}, 97.2),
    ]
    candidates, repeats, sd = annotate(rows, seeds=2)
    assert [c.config for c in candidates] == [fast, slow] and repeats == 4
    assert sd == pytest.approx(math.sqrt((0.5 + 0.72667 + 0.32) / 6), rel=1e-3)  # prior and both candidates
    by_id = {r.trial_id: r for r in rows}
    assert by_id["s1"].runs == pytest.approx((97.3, 96.1, 96.8)) and by_id["s1"].held is False
    assert not by_id["s1"].feasible and by_id["s2"].feasible and by_id["r4"].feasible
    assert rank(rows)[0].trial_id == "s2"  # the best run of the configuration that held
    assert by_id["s2"].top1_mean == pytest.approx(97.6)
    own = math.sqrt((0.5 + 0.32) / 4)  # the slow configuration's runs: 98.0, 97.6, 97.2
    assert by_id["s2"].top1_lower == pytest.approx(97.6 - own / math.sqrt(3))  # 97.34: clear by the margin
    closest = closest_infeasible(rows)
    assert closest is not None and closest.shortfall == pytest.approx(96.7333 - 97.0, abs=1e-3)
    again = TrialRow.from_dict(by_id["s2"].to_dict())
    assert again.runs == by_id["s2"].runs and again.held is True and again.top1_lower == by_id["s2"].top1_lower
    annotate(rows, seeds=2, margin=3.0)  # three standard errors: 97.6 is not clear of 97 by 0.78
    assert by_id["s2"].held is False and not any(r.feasible for r in rows)


def test_the_budget_is_resolved_or_refused_by_name():
    assert resolve_reserve(None, 2, 20, searched=True) == 4  # a fifth, whole candidates
    assert resolve_reserve(None, 2, 9, searched=True) == 0
    assert resolve_reserve(None, 2, 20, searched=False) == 0
    assert resolve_reserve(6, 3, 20, searched=True) == 6
    for confirm, seeds, samples, searched, needle in [
        (3, 2, 20, True, "--confirm-seeds (2)"),
        (20, 2, 20, True, "--num-samples 20"),
        (2, 2, 1, False, "fixed configuration"),
        (2, 0, 20, True, "--confirm-seeds 0"),
    ]:
        with pytest.raises(UserError, match=needle.replace("(", r"\(").replace(")", r"\)")):
            resolve_reserve(confirm, seeds, samples, searched)


def test_every_registered_searcher_can_be_wrapped():
    for name in ("bayesopt", "optuna", "random", "grid"):
        inner = make_searcher(name, SearchSettings(PARAMS, initial_points=2, seed=0, num_samples=4))
        searcher = Confirming(inner, search=4, reserve=2, seeds=1)
        done = drive(searcher, 6, np.random.default_rng(0))
        assert sum(REPEAT not in c for _, c, _ in done) == 4, name
