"""The searcher on synthetic objectives: cheap, deterministic, no Ray cluster."""

import math

import pytest

from edge_tune.search import ConstrainedBayesOpt, make_searcher
from edge_tune.space import Param

PARAMS = {"x": Param("x", "float", 0.0, 1.0), "y": Param("y", "float", 0.0, 1.0)}


def synthetic(cfg):
    # Faster with more pruning (x + y), but accuracy falls: feasible only while x + y <= 1.
    return {"score": cfg["x"] + cfg["y"], "constraint": 1.0 - (cfg["x"] + cfg["y"])}


def drive(searcher, n, fn=synthetic):
    results = []
    for i in range(n):
        cfg = searcher.suggest(f"t{i}")
        res = fn(cfg)
        searcher.on_trial_complete(f"t{i}", res)
        results.append((cfg, res))
    return results


def test_finds_the_constrained_optimum():
    results = drive(ConstrainedBayesOpt(PARAMS, initial_points=4, seed=1), 18)
    best = max(r["score"] for _, r in results if r["constraint"] >= 0)
    assert best > 0.9  # the optimum is 1.0 on the line x + y = 1
    late = results[8:]
    assert sum(r["constraint"] >= -0.2 for _, r in late) >= len(late) // 2  # it learnt where feasibility ends


def test_seeded_and_deterministic():
    a = [cfg for cfg, _ in drive(ConstrainedBayesOpt(PARAMS, seed=3), 7)]
    b = [cfg for cfg, _ in drive(ConstrainedBayesOpt(PARAMS, seed=3), 7)]
    assert a == b


def test_nan_inf_and_errors_never_reach_the_optimiser():
    s = ConstrainedBayesOpt(PARAMS, seed=0)
    for i, result in enumerate(
        [{"score": math.nan, "constraint": 1.0}, {"score": 1.0, "constraint": math.inf}, {"score": 1.0}, None]
    ):
        s.suggest(f"t{i}")
        s.on_trial_complete(f"t{i}", result)
    s.suggest("err")
    s.on_trial_complete("err", {"score": 1.0, "constraint": 1.0}, error=True)
    assert s.observations == [] and len(s._optimizer.space) == 0
    s.suggest("ok")
    s.on_trial_complete("ok", {"score": 0.5, "constraint": 0.1})
    assert len(s.observations) == 1


def test_typed_parameters_come_back_typed():
    params = {
        "r": Param("r", "float", 0.0, 0.9),
        "k": Param("k", "int", 1, 4),
        "g": Param("g", "choice", values=("Filters", "Channels")),
    }
    s = ConstrainedBayesOpt(params, initial_points=2, seed=0)
    for cfg, _ in drive(s, 6, lambda c: {"score": c["r"] + c["k"] / 4, "constraint": 0.5 - c["r"]}):
        assert isinstance(cfg["r"], float) and isinstance(cfg["k"], int) and 1 <= cfg["k"] <= 4
        assert cfg["g"] in ("Filters", "Channels")


def test_pending_suggestions_differ():
    s = ConstrainedBayesOpt(PARAMS, initial_points=2, seed=0)
    drive(s, 4)
    pending = [s.suggest(f"p{i}") for i in range(3)]
    assert len({tuple(sorted(c.items())) for c in pending}) == 3


def test_save_and_restore(tmp_path):
    s = ConstrainedBayesOpt(PARAMS, seed=5)
    drive(s, 6)
    s.save(str(tmp_path / "state.pkl"))
    restored = ConstrainedBayesOpt(PARAMS, seed=5)
    restored.restore(str(tmp_path / "state.pkl"))
    assert restored.observations == s.observations
    assert restored.suggest("next") == s.suggest("next")


def test_minimise_mode_flips_the_sign():
    s = ConstrainedBayesOpt(PARAMS, metric="loss", mode="min", seed=0)
    s.suggest("t")
    s.on_trial_complete("t", {"loss": 2.0, "constraint": 1.0})
    assert s.observations[0][1] == -2.0


def test_unknown_searcher_is_a_user_error():
    from edge_tune.errors import UserError

    with pytest.raises(UserError, match="bayesopt"):
        make_searcher("hyperopt", PARAMS, 2, 0)


def test_no_feasible_point_yet_heads_for_feasibility():
    s = ConstrainedBayesOpt(PARAMS, initial_points=3, seed=0)
    # Feasible only near the origin, and no random point lands there.
    results = drive(s, 8, lambda c: {"score": c["x"] + c["y"], "constraint": 0.2 - (c["x"] + c["y"])})
    assert min(c["x"] + c["y"] for c, _ in results[3:]) < min(c["x"] + c["y"] for c, _ in results[:3])


def test_never_reruns_a_point_already_run():
    s = ConstrainedBayesOpt(PARAMS, initial_points=2, seed=0)
    # A flat objective with one tempting, infeasible spike: the GP must not send trials back to it.
    results = drive(s, 12, lambda c: {"score": 1.0 if c["x"] > 0.9 else 0.0, "constraint": -1.0 if c["x"] > 0.9 else 1})
    configs = [c for c, _ in results]
    for i, a in enumerate(configs):
        for b in configs[:i]:
            assert max(abs(a["x"] - b["x"]), abs(a["y"] - b["y"])) >= 0.02
