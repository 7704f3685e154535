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
    assert int8_only["speedup"] > 1.0  # INT8 kernels beat the f32 baseline on this CPU
    assert pruned_int8["macs_ratio"] < 0.6 and pruned_int8["speedup"] > int8_only["speedup"]
    table = (tmp_path / "study.md").read_text()
    assert "| INT8 only | `filter_prune_int8` | 100 % |" in table and "filters + INT8" in table


def test_bad_sparsity_exits_2():
    proc = subprocess.run(
        [sys.executable, "-m", "edge_tune.study", "--sparsity", "1.5"], cwd=REPO, capture_output=True, text=True
    )
    assert proc.returncode == 2 and "--sparsity" in proc.stderr
