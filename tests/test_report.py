import json

from edge_tune.report import TrialRow, format_table, rank, write_outputs


def row(tid, feasible, score, status="ok"):
    metrics = {"feasible": feasible, "score": score, "speedup": 1.0 + score, "top1": 97.0, "macs": 10}
    return TrialRow(tid, status, {"r": 0.5}, metrics if status == "ok" else {}, "" if status == "ok" else "boom")


def test_rank_puts_best_feasible_first_and_errors_last():
    rows = [row("a", False, 0.9), row("b", True, 0.2), row("c", True, 0.4), row("d", False, 0.0, "error")]
    assert [r.trial_id for r in rank(rows)] == ["c", "b", "a", "d"]


def test_table_and_files(tmp_path):
    rows = [row("a", False, 0.9), row("d", False, 0.0, "error")]
    text = format_table(rows, ["r"])
    assert "config/r" in text and "errored trials" in text and "boom" in text
    best, layers = write_outputs(tmp_path, rows, ["r"], {"space": "x"})
    assert best is None and layers == []  # nothing feasible, no checkpoint
    summary = json.loads((tmp_path / "best.json").read_text())
    assert summary["feasible"] is False and summary["trial_id"] == "a"
    lines = (tmp_path / "results.csv").read_text().splitlines()
    assert len(lines) == 3 and lines[1].startswith("a,ok")
