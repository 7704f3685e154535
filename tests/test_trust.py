"""The record of what a run wrote (trust.py) and of its errored trials (errored.py), piece by piece; a real
run, kill -9 and hostile copies are in test_resume.py."""

import json
import pickle

import pytest

from edge_tune.errored import earlier_error, record_error
from edge_tune.errors import UserError
from edge_tune.trust import KEEP, Ledger, check_folder, pickles


def _experiment(folder):
    folder.mkdir(parents=True)
    (folder / "edge_tune_run.json").write_text(json.dumps({"argv": ["--space", "filter_prune"], "id": folder.name}))
    (folder / "tuner.pkl").write_bytes(pickle.dumps({"a": 1}))
    (folder / "experiment_state-1.json").write_text("{}")
    (folder / "results.json").write_text("{}")  # ours, read as JSON: not vouched for
    (folder / "run_trial_1").mkdir()
    (folder / "run_trial_1" / "params.pkl").write_bytes(pickle.dumps({"r": 0.5}))
    return folder


def test_a_recorded_folder_resumes_even_moved_and_any_change_is_named(tmp_path):
    exp = _experiment(tmp_path / "exp")
    assert {p.name for p in pickles(exp)} == {"experiment_state-1.json", "tuner.pkl", "params.pkl"}
    with pytest.raises(UserError, match=r"edge_tune_run\.json was not written by edge_tune for this user"):
        check_folder(exp)  # nothing recorded yet
    ledger = Ledger(exp)
    ledger.update(exp)
    check_folder(exp)
    moved = exp.rename(tmp_path / "elsewhere")
    check_folder(moved)  # found by content, not by path

    (moved / "experiment_state-1.json").write_text('{"changed": 1}')  # Tune rewrites its state
    with pytest.raises(UserError, match=r"experiment_state-1\.json is not a file this user's run wrote"):
        check_folder(moved)
    Ledger(moved).update(moved)  # ... and the ledger follows it
    check_folder(moved)

    (moved / "run_trial_1" / "error.pkl").write_bytes(pickle.dumps(ValueError("x")))
    with pytest.raises(UserError, match=r"error\.pkl .*--trust-folder"):
        check_folder(moved)


def test_the_ledger_keeps_the_last_digests_of_each_file(tmp_path):
    exp = _experiment(tmp_path / "exp")
    ledger = Ledger(exp)
    for i in range(KEEP + 3):
        (exp / "tuner.pkl").write_bytes(pickle.dumps(i))
        ledger.seen.clear()  # as if the file's time had moved on
        ledger.update(exp)
    assert len(ledger.files["tuner.pkl"]) == KEEP
    check_folder(exp)  # the newest is among them


def test_errored_trials_are_remembered_across_runs(tmp_path):
    assert earlier_error(tmp_path, "t1") is None
    record_error(tmp_path, "t1", "RayActorError: the actor died")
    record_error(tmp_path, "t2", "ValueError: loss is nan")
    assert earlier_error(tmp_path, "t1") == "RayActorError: the actor died"
    assert earlier_error(tmp_path, "t2") == "ValueError: loss is nan" and earlier_error(tmp_path, "t3") is None
    (tmp_path / "errored_trials.json").write_text("[not json")
    assert earlier_error(tmp_path, "t1") is None  # a damaged record blocks nothing
