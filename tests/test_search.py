"""The searcher on synthetic objectives: cheap, deterministic, no Ray cluster."""

import json
import math

import pytest

from edge_tune.params import Param
from edge_tune.search import (
    SEARCHERS,
    ConstrainedBayesOpt,
    OptunaTPE,
    RandomSearch,
    SearchSettings,
    UniformSweep,
    make_searcher,
)
from edge_tune.search.sieve import Screened, use_screen

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


TYPED = {
    "r": Param("r", "float", 0.0, 0.9),
    "k": Param("k", "int", 1, 4),
    "g": Param("g", "choice", values=("Filters", "Channels")),
}


def test_first_points_are_the_uniform_diagonal_then_random():
    # Suggested all at once (no outcome yet): the diagonal's middle, then the middles of its halves.
    s = ConstrainedBayesOpt(TYPED, initial_points=5, seed=0)
    first = [s.suggest(f"t{i}") for i in range(5)]
    assert first[:3] == [
        {"r": 0.45, "k": 2, "g": "Filters"},  # the middle of every range first (k: 2.5, rounded to even)
        {"r": 0.675, "k": 3, "g": "Channels"},
        {"r": 0.225, "k": 2, "g": "Filters"},
    ]
    assert s.origins == ["uniform"] * 3 + ["random"] * 2
    assert ConstrainedBayesOpt(TYPED, initial_points=2, seed=0).uniform_points == 2  # never more than initial


@pytest.mark.parametrize(
    ("holds", "fractions"),
    [
        ((True, True), (1 / 2, 3 / 4, 7 / 8)),  # the threshold holds: prune more
        ((True, False), (1 / 2, 3 / 4, 5 / 8)),  # between the last that held and the first that did not
        ((False, True), (1 / 2, 1 / 4, 3 / 8)),
        ((False, False), (1 / 2, 1 / 4, 1 / 8)),
    ],
)
def test_uniform_points_bisect_the_diagonal_for_the_threshold(holds, fractions):
    # One at a time, each uniform point halves the bracket where the threshold is crossed:
    # along the diagonal accuracy falls as every ratio grows, so the best uniform point is
    # the largest fraction that still holds.
    s = ConstrainedBayesOpt({"r": Param("r", "float", 0.0, 0.8)}, initial_points=3, seed=0)
    seen = []
    for i, ok in enumerate((*holds, True)):
        seen.append(s.suggest(f"t{i}")["r"])
        if i < len(holds):
            s.on_trial_complete(f"t{i}", {"score": 1.0 + i, "constraint": 0.5 if ok else -0.5})
    assert seen[:3] == pytest.approx([0.8 * f for f in fractions])
    assert s.origins == ["uniform"] * 3


def test_an_errored_uniform_point_teaches_nothing_and_is_not_run_again():
    s = ConstrainedBayesOpt({"r": Param("r", "float", 0.0, 1.0)}, initial_points=3, seed=0)
    s.suggest("a")
    s.on_trial_complete("a", error=True)
    # Not learnt (neither side of the threshold), but it cuts the bracket as a pending point would.
    assert s.suggest("b")["r"] == pytest.approx(0.75) and s._diagonal_seen == []


def _linf(a, b):
    return max(abs(a[k] - b[k]) for k in a)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_four_concurrent_suggestions_are_informative_not_duplicates(seed):
    # Kriging believer: each pending point is held at the GPs' prediction, so the next
    # proposal is the model's best elsewhere, not the same argmax again and not a random fill-in.
    # Random initial points only: the uniform diagonal's midpoint is this objective's optimum,
    # after which expected improvement is flat and there is no single argmax to collapse onto.
    def four(believer):
        s = ConstrainedBayesOpt(
            PARAMS, initial_points=4, seed=seed, believer=believer, min_distance=distance, uniform_points=0
        )
        drive(s, 8)
        return [s.suggest(f"p{i}") for i in range(4)], s.origins[-4:]

    distance = 0.05
    spread, origins = four(believer=True)
    assert origins == ["model"] * 4  # each one the model's choice, none a random fill-in
    assert min(_linf(a, b) for i, a in enumerate(spread) for b in spread[:i]) >= distance
    distance = 0.0
    collapsed, _ = four(believer=False)  # the same optimiser without it proposes one point four times
    assert max(_linf(a, b) for i, a in enumerate(collapsed) for b in collapsed[:i]) < 0.01


def test_restored_mid_bisection_it_goes_on_where_it_stopped(tmp_path):
    s = ConstrainedBayesOpt(PARAMS, initial_points=3, seed=5)
    drive(s, 1)
    s.suggest("pending")  # interrupted with one uniform trial still running
    s.save(str(tmp_path / "state.json"))
    restored = ConstrainedBayesOpt(PARAMS, initial_points=3, seed=5)
    restored.restore(str(tmp_path / "state.json"))
    assert restored.suggest("next") == s.suggest("next")
    assert restored.origins[-1] == "uniform"


def test_minimise_mode_flips_the_sign():
    s = ConstrainedBayesOpt(PARAMS, metric="loss", mode="min", seed=0)
    s.suggest("t")
    s.on_trial_complete("t", {"loss": 2.0, "constraint": 1.0})
    assert s.observations[0][1] == -2.0


def test_unknown_searcher_is_a_user_error():
    from edge_tune.errors import UserError

    with pytest.raises(UserError, match="bayesopt"):
        make_searcher("hyperopt", SearchSettings(PARAMS, 2, 0))


def test_no_feasible_point_yet_heads_for_feasibility():
    s = ConstrainedBayesOpt(PARAMS, initial_points=3, seed=0)
    # Feasible only near the origin, and no random point lands there.
    results = drive(s, 8, lambda c: {"score": c["x"] + c["y"], "constraint": 0.2 - (c["x"] + c["y"])})
    assert min(c["x"] + c["y"] for c, _ in results[3:]) < min(c["x"] + c["y"] for c, _ in results[:3])


def test_one_lucky_trial_does_not_become_the_incumbent():
    # Feasible up to x = 0.5 (score = x); infeasible beyond, but one noisy fine-tune at
    # x = 0.8 scraped past the threshold. Its neighbours say it is infeasible.
    s = ConstrainedBayesOpt({"x": Param("x", "float", 0.0, 1.0)}, initial_points=0, seed=0)
    for i in range(11):
        x = i / 10
        s._record({"x": x}, x, 0.05 if x == 0.8 else (1.0 if x <= 0.5 else -1.0))
    s.suggest("next")
    assert s._optimizer.space._target_max() == pytest.approx(0.8)  # bayes_opt's own incumbent: the lucky one
    assert s._optimizer.acquisition_function.y_max == pytest.approx(0.5, abs=0.1)  # ours: the best believed feasible


def test_never_reruns_a_point_already_run():
    s = ConstrainedBayesOpt(PARAMS, initial_points=2, seed=0)
    # A flat objective with one tempting, infeasible spike: the GP must not send trials back to it.
    results = drive(s, 12, lambda c: {"score": 1.0 if c["x"] > 0.9 else 0.0, "constraint": -1.0 if c["x"] > 0.9 else 1})
    configs = [c for c, _ in results]
    for i, a in enumerate(configs):
        for b in configs[:i]:
            assert max(abs(a["x"] - b["x"]), abs(a["y"] - b["y"])) >= 0.05


def test_a_trial_stopped_for_accuracy_teaches_the_constraint_model():
    s = ConstrainedBayesOpt(PARAMS, initial_points=2, seed=0)
    drive(s, 3)
    s.suggest("stopped")
    s.on_trial_complete("stopped", {"score": math.nan, "constraint": -5.0})  # no latency yet, clearly infeasible
    _, target, constraint = s.observations[-1]
    assert constraint == -5.0 and target == min(t for _, t, _ in s.observations[:-1])
    s.suggest("unknown")
    s.on_trial_complete("unknown", {"score": math.nan, "constraint": 0.5})  # feasible without a score: no use
    assert len(s.observations) == 4


def test_unconstrained_mode_ignores_the_constraint():
    # The combined objective: the searcher maximises the score alone.
    s = make_searcher("bayesopt", SearchSettings(PARAMS, 3, 0, constrained=False))
    results = drive(s, 12, lambda c: {"score": c["x"] + c["y"], "constraint": -1.0})
    assert s._optimizer.constraint is None
    assert max(r["score"] for _, r in results) > 1.8  # the corner a constraint would forbid


@pytest.mark.parametrize("seed", [0, 1])
def test_optuna_tpe_respects_the_constraint(seed):
    s = OptunaTPE(PARAMS, initial_points=5, seed=seed)
    results = drive(s, 25)
    best = max(r["score"] for _, r in results if r["constraint"] >= 0)
    assert best > 0.85
    late = results[15:]
    assert sum(r["constraint"] >= -0.25 for _, r in late) >= len(late) // 2


def test_optuna_tpe_seeded_errors_skipped_and_restored(tmp_path):
    a = [cfg for cfg, _ in drive(OptunaTPE(PARAMS, seed=3), 8)]
    b = [cfg for cfg, _ in drive(OptunaTPE(PARAMS, seed=3), 8)]
    assert a == b
    s = OptunaTPE(PARAMS, seed=0)
    s.suggest("err")
    s.on_trial_complete("err", {"score": 1.0, "constraint": 1.0}, error=True)
    s.suggest("nan")
    s.on_trial_complete("nan", {"score": math.nan, "constraint": 1.0})
    assert s.observations == []
    drive(s, 5)
    s.save(str(tmp_path / "tpe.json"))
    restored = OptunaTPE(PARAMS, seed=0)
    restored.restore(str(tmp_path / "tpe.json"))
    assert restored.observations == s.observations and len(restored._study.trials) == 5
    assert set(restored.suggest("next")) == {"x", "y"}


# -- the contract every registered searcher keeps ------------------------------------------------


class EveryConfigItsOwnNetwork:
    """Sieve's screen for the contract: faster and less accurate with every numeric value."""

    baseline = Screened("baseline", 1.0, 90.0)
    threshold = 85.0

    def __call__(self, config):
        load = sum(float(v) for v in config.values() if isinstance(v, int | float))
        return Screened(json.dumps(config, sort_keys=True), 1.0 + load, 90.0 - 5 * load)


@pytest.fixture(autouse=True)
def screen():
    use_screen(EveryConfigItsOwnNetwork())
    yield
    use_screen(None)


def contract(name, params=PARAMS, seed=0):
    # Few initial points, so that the model-based searchers propose within a few trials.
    return make_searcher(name, SearchSettings(params, initial_points=3, seed=seed, num_samples=8))


def typed_feedback(c):
    return {"score": c["r"] + c["k"] / 4, "constraint": 0.5 - c["r"]}


@pytest.mark.parametrize("name", list(SEARCHERS))
def test_contract_seeded(name):
    a = [cfg for cfg, _ in drive(contract(name, seed=7), 6)]
    b = [cfg for cfg, _ in drive(contract(name, seed=7), 6)]
    assert a == b and len({tuple(sorted(c.items())) for c in a}) > 1


@pytest.mark.parametrize("name", list(SEARCHERS))
def test_contract_typed_values_in_range(name):
    for cfg, _ in drive(contract(name, TYPED), 6, typed_feedback):
        assert isinstance(cfg["r"], float) and 0.0 <= cfg["r"] <= 0.9
        assert isinstance(cfg["k"], int) and not isinstance(cfg["k"], bool) and 1 <= cfg["k"] <= 4
        assert cfg["g"] in ("Filters", "Channels")


@pytest.mark.parametrize("name", list(SEARCHERS))
def test_contract_nan_inf_and_errors_are_never_learnt(name):
    s = contract(name)
    bad = [{"score": math.nan, "constraint": 1.0}, {"score": math.inf, "constraint": 1.0}]
    bad += [{"score": 1.0, "constraint": math.inf}, {"score": 1.0, "constraint": math.nan}, {"score": 1.0}, None]
    for i, result in enumerate(bad):
        s.suggest(f"bad{i}")
        s.on_trial_complete(f"bad{i}", result)
    s.suggest("err")
    s.on_trial_complete("err", {"score": 1.0, "constraint": 1.0}, error=True)
    assert s.observations == []
    s.suggest("ok")
    s.on_trial_complete("ok", {"score": 0.5, "constraint": 0.1})
    assert len(s.observations) == 1 and s.observations[0][1:] == (0.5, 0.1)


@pytest.mark.parametrize("name", list(SEARCHERS))
def test_contract_save_then_restore_gives_the_same_next_suggestion(name, tmp_path):
    s = contract(name, seed=2)
    drive(s, 5)
    s.save_to_dir(str(tmp_path), "session")  # as Tune saves it, in the experiment folder
    (saved,) = tmp_path.iterdir()
    assert saved.name == "searcher-state-session.json"
    assert isinstance(json.loads(saved.read_text()), dict)  # data, not a pickle: resuming runs no code
    restored = contract(name, seed=2)
    restored.restore_from_dir(str(tmp_path))
    assert restored.observations == s.observations and len(s.observations) == 5
    assert restored.suggest("next") == s.suggest("next")


@pytest.mark.parametrize("name", list(SEARCHERS))
def test_contract_a_damaged_state_is_named(name, tmp_path):
    (tmp_path / "searcher-state-x.json").write_bytes(b"\x80\x04K\x01.")  # a pickle where JSON belongs
    with pytest.raises(ValueError, match=r"searcher-state-x\.json: not a saved searcher state"):
        contract(name).restore_from_dir(str(tmp_path))


def test_a_folder_with_only_a_pickled_state_starts_the_searcher_afresh(tmp_path, capsys):
    (tmp_path / "searcher-state-old.pkl").write_bytes(b"\x80\x04K\x01.")  # what an older version saved
    s = contract("bayesopt")
    s.restore_from_dir(str(tmp_path))
    assert s.observations == [] and "starts without the earlier observations" in capsys.readouterr().out


def test_an_errored_point_is_not_proposed_again_even_after_a_restore(tmp_path):
    s = ConstrainedBayesOpt(PARAMS, initial_points=4, seed=3)
    first = s.suggest("a")  # the diagonal's midpoint
    s.on_trial_complete("a", None, error=True)
    s.suggest("b")
    s.on_trial_complete("b", {"score": 0.4, "constraint": 0.2})
    for i in range(4):  # random and model proposals keep clear of it too
        config = s.suggest(f"c{i}")
        assert max(abs(config[k] - first[k]) for k in first) >= s.min_distance  # both ranges are [0, 1]
        s.on_trial_complete(f"c{i}", {"score": config["x"], "constraint": 0.8 - config["y"]})
    s.save(str(tmp_path / "s.json"))
    restored = ConstrainedBayesOpt(PARAMS, initial_points=4, seed=3)
    restored.restore(str(tmp_path / "s.json"))
    assert restored._failed == [first] and restored._too_close(first)


def test_random_search_is_seeded_typed_and_in_range():
    params = {**PARAMS, "k": Param("k", "int", 1, 3), "g": Param("g", "choice", values=("a", "b"))}
    a = [RandomSearch(params, seed=4).suggest(str(i)) for i in range(1)]
    s = RandomSearch(params, seed=4)
    draws = [s.suggest(str(i)) for i in range(200)]
    assert draws[0] == a[0]
    assert all(0 <= d["x"] <= 1 and d["k"] in (1, 2, 3) and d["g"] in ("a", "b") for d in draws)
    assert {d["k"] for d in draws} == {1, 2, 3} and {d["g"] for d in draws} == {"a", "b"}


def test_uniform_sweep_moves_every_ratio_together_then_finishes():
    params = {"a": Param("a", "float", 0.0, 0.9), "b": Param("b", "float", 0.1, 0.5), "k": Param("k", "int", 1, 5)}
    s = make_searcher("grid", SearchSettings(params, 0, 0, num_samples=5))
    assert isinstance(s, UniformSweep)
    sweep = [s.suggest(str(i)) for i in range(5)]
    assert [c["a"] for c in sweep] == pytest.approx([0.0, 0.225, 0.45, 0.675, 0.9])
    assert [c["b"] for c in sweep] == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.5])
    assert [c["k"] for c in sweep] == [1, 2, 3, 4, 5]
    assert s.suggest("6") == UniformSweep.FINISHED
