"""The threshold-aware early-stopping rule and its Tune scheduler, on stub trials."""

import json
from types import SimpleNamespace

import pytest
from ray.tune.schedulers import TrialScheduler

from edge_tune.early_stop import STOPPED_FILE, ThresholdStopping, make_early_stopping, threshold_rule


def test_rule_needs_evidence_and_stops_only_the_hopeless():
    assert not threshold_rule(10.0, [1.0, 2.0], threshold=97.0, margin=1.0, min_finished=3)  # too few finished
    assert threshold_rule(90.0, [1.0, 2.0, 5.0], threshold=97.0, margin=1.0, min_finished=3)  # 90 + 5 + 1 < 97
    assert not threshold_rule(91.5, [1.0, 2.0, 5.0], threshold=97.0, margin=1.0, min_finished=3)  # might make it


def trial(tmp_path, name):
    folder = tmp_path / name
    folder.mkdir()
    return SimpleNamespace(trial_id=name, local_path=str(folder))


def epoch(n, top1, final=False):
    return {"epoch": n, "epochs": 3, "top1": top1, "final": final}


def test_scheduler_learns_recovery_from_finished_trials(tmp_path):
    s = ThresholdStopping(threshold=97.0, margin=1.0, min_finished=3)
    for i, (first, last) in enumerate([(60.0, 98.0), (85.0, 98.5), (95.0, 98.9)]):  # recoveries 38, 13.5, 3.9
        t = trial(tmp_path, f"done{i}")
        assert s.on_trial_result(None, t, epoch(1, first)) == TrialScheduler.CONTINUE  # no evidence yet
        s.on_trial_result(None, t, epoch(3, last))
        s.on_trial_complete(None, t, epoch(3, last, final=True))
    slow = trial(tmp_path, "slow")  # 59 + 38 + 1 = 98 >= 97: a slow starter is kept
    assert s.on_trial_result(None, slow, epoch(1, 59.0)) == TrialScheduler.CONTINUE
    hopeless = trial(tmp_path, "hopeless")  # 50 + 38 + 1 < 97
    assert s.on_trial_result(None, hopeless, epoch(1, 50.0)) == TrialScheduler.STOP
    saved = json.loads((tmp_path / "hopeless" / STOPPED_FILE).read_text())
    assert saved["epoch"] == 1 and "threshold 97.00%" in saved["reason"] and "hopeless" in s.stopped
    # The last epoch is never cut short: its final result follows at once.
    assert s.on_trial_result(None, trial(tmp_path, "last"), epoch(3, 10.0)) == TrialScheduler.CONTINUE


@pytest.mark.parametrize("kind", ["threshold", "asha", "none"])
def test_every_kind_builds(kind):
    assert make_early_stopping(kind, 97.0, 3) is not None
