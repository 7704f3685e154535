"""The paradigm study's CLI, for real on a small budget."""

import json
import subprocess
import sys

from conftest import REPO


def test_study_reports_each_paradigm_against_the_baseline(tmp_path, cache_dir):
    proc = subprocess.run(
        [sys.executable, "-m", "edge_tune.study", "--only", "filter_prune_int8", "--epochs", "1",
         "--baseline-epochs", "4", "--cache-dir", str(cache_dir), "--out", str(tmp_path)],
        cwd=REPO, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((tmp_path / "study.json").read_text())
    int8_only, pruned_int8 = result["rows"]
    assert int8_only["paradigm"] == "INT8 only" and int8_only["macs_ratio"] == 1.0 and int8_only["int8"]
    assert pruned_int8["macs_ratio"] < 0.6 and not pruned_int8["latency_cached"]
    for row in (int8_only, pruned_int8):  # each measured on the device against the interleaved baseline
        lo, hi = row["speedup_ci"]
        assert lo <= row["speedup"] <= hi and row["speedup"] > 1.0  # INT8 kernels beat the f32 baseline
    # Whether pruning adds speed on top of INT8 depends on the CPU's INT8 kernels (docs/study/study.md):
    # a claim for the study's table, not for a test on whatever machine runs it.
    table = (tmp_path / "study.md").read_text()
    assert "| INT8 only | `filter_prune_int8` | 100 % |" in table and "filters + INT8" in table


def test_bad_sparsity_exits_2():
    proc = subprocess.run(
        [sys.executable, "-m", "edge_tune.study", "--sparsity", "1.5"], cwd=REPO, capture_output=True, text=True
    )
    assert proc.returncode == 2 and "--sparsity" in proc.stderr
