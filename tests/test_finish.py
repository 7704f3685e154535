"""The verdict that ends a run: which trial is called best, and when nothing is measurably faster."""

from test_results import measured

from edge_tune.finish import EXIT_NO_FEASIBLE, EXIT_OK, verdict
from edge_tune.objective import Objective


def test_a_faster_best_is_named_with_its_ci(capsys):
    best = measured("quick", 98.0, 1.35, True)
    assert verdict([best], best, Objective(97.0), 40_000_000) == EXIT_OK
    out = capsys.readouterr().out
    assert "best feasible: quick speedup 1.350x (95% CI 1.323-1.377" in out and "not measurably" not in out


def test_a_best_whose_ci_reaches_one_is_not_called_faster(capsys):
    best = measured("meh", 98.0, 0.985, True)
    assert verdict([best], best, Objective(97.0), 40_000_000) == EXIT_OK
    out = capsys.readouterr().out
    assert "no feasible trial is measurably faster than the baseline" in out and "meh" in out
    assert "best feasible:" not in out


def test_no_feasible_trial_names_the_closest(capsys):
    rows = [measured("near", 96.5, 1.2, False), measured("far", 90.0, 3.0, False)]
    assert verdict(rows, None, Objective(97.0), 40_000_000) == EXIT_NO_FEASIBLE
    assert "the closest was near at top1 96.50% (0.50 points short" in capsys.readouterr().out


def test_a_pick_that_rests_on_one_fine_tune_under_confirmation_says_why(capsys):
    fast, best = measured("fast", 97.2, 1.6, True), measured("slower", 98.0, 1.35, True)
    fast.runs, fast.held = (97.2, 96.5, 96.9), False
    assert verdict([fast, best], best, Objective(97.0), 40_000_000, confirming=True) == EXIT_OK
    out = capsys.readouterr().out
    assert "best feasible: slower" in out and "not confirmed" in out and "1.600x" in out
    best.runs, best.held = (98.0, 97.5, 97.8), True
    assert verdict([fast, best], best, Objective(97.0), 40_000_000, confirming=True) == EXIT_OK
    out = capsys.readouterr().out
    assert "mean top1 97.77% over 3 fine-tunes (98.00, 97.50, 97.80), held" in out and "not confirmed" not in out
