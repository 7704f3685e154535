"""An interrupted search resumes without repeating finished trials: a real Ctrl-C, and a real kill -9 of the
driver, of a real run."""

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO, run_cli


def _finished_trials(exp: Path) -> dict[str, int]:
    """Trial folder -> how many final results it reported."""
    out = {}
    for result in exp.glob("*/result.json"):
        out[result.parent.name] = sum('"final": true' in line for line in result.read_text().splitlines())
    return {k: v for k, v in out.items() if v}


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["ctrl-c", "kill-9"])
def test_interrupt_then_resume_keeps_finished_trials(cache_dir, tmp_path, sig):
    exp = tmp_path / "out" / "resumable"
    cmd = [sys.executable, "-m", "edge_tune.run", "--space", "filter_prune", "--smoke", "--num-samples", "2",
           "--max-concurrent", "1", "--cache-dir", str(cache_dir), "--output-dir", str(tmp_path / "out"),
           "--name", "resumable"]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 600
    while time.time() < deadline and not _finished_trials(exp) and proc.poll() is None:
        time.sleep(1)
    assert proc.poll() is None, "the run ended before it could be interrupted"
    before = _finished_trials(exp)
    assert len(before) >= 1
    if sig == signal.SIGKILL:
        time.sleep(3)  # Tune saves its state within a second of the trial's end; kill -9 gives it no other chance
    proc.send_signal(sig)
    out, _ = proc.communicate(timeout=300)
    if sig == signal.SIGINT:
        assert proc.returncode == 130, out[-2000:]
        assert "--resume" in out
    else:
        assert proc.returncode == -9
    assert not (exp / "results.csv").exists()  # it really stopped before the end

    resumed = run_cli("--resume", str(exp), cwd=tmp_path)  # from another folder, as a user might
    assert resumed.returncode in (0, 3), resumed.stderr[-3000:] + resumed.stdout[-2000:]
    rows = list(csv.DictReader(open(exp / "results.csv")))
    assert len(rows) == 2
    assert f"searcher restored with {len(before)} observation(s)" in resumed.stdout  # the GP's data came back
    after = _finished_trials(exp)
    for trial, finals in before.items():
        assert after[trial] == finals == 1  # finished before the interrupt: kept, not run again
    assert len(after) == 2


def test_resume_on_a_folder_that_is_not_an_experiment_exits_2(tmp_path):
    proc = run_cli("--resume", str(tmp_path), cwd=REPO)
    assert proc.returncode == 2 and "not an edge_tune experiment" in proc.stderr


def test_resume_takes_no_other_flags(tmp_path):
    (tmp_path / "edge_tune_run.json").write_text(json.dumps({"argv": [], "space": "x", "cwd": os.getcwd()}))
    proc = run_cli("--resume", str(tmp_path), "--epochs", "2", cwd=REPO)
    assert proc.returncode == 2 and "--resume" in proc.stderr
