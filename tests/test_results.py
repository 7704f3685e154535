import json

from edge_tune.results import TrialRow, closest_infeasible, format_table, pareto_front, rank, write_outputs


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


def measured(tid, top1, latency, feasible, device=None):
    metrics = {"top1": top1, "top1_device": top1 if device is None else device, "latency_ms": latency}
    metrics |= {"feasible": feasible, "constraint": top1 - 97.0, "speedup": 1.0 / latency, "score": 0.0}
    return TrialRow(tid, "ok", {"r": 0.5}, metrics)


def test_pareto_front_of_top1_and_latency(tmp_path):
    rows = [
        measured("fast", 95.0, 0.4, False),
        measured("mid", 97.5, 0.6, True),
        measured("dominated", 97.0, 0.7, True),  # slower and less accurate than "mid"
        measured("accurate", 99.0, 0.9, True),
        measured("device_worse", 99.5, 0.8, True, device=96.0),  # judged at its device top-1: 96.0, dominated
        TrialRow("err", "error", {"r": 0.1}, {}, "boom"),
    ]
    assert [r.trial_id for r in pareto_front(rows)] == ["fast", "mid", "accurate"]
    write_outputs(tmp_path, rows, ["r"], {"space": "x"})
    lines = (tmp_path / "pareto.csv").read_text().splitlines()
    assert [line.split(",")[0] for line in lines[1:]] == ["fast", "mid", "accurate"]


def test_no_feasible_trial_reports_the_closest_infeasible(tmp_path):
    rows = [measured("far", 90.0, 0.3, False), measured("near", 96.5, 0.8, False), measured("mid", 94.0, 0.5, False)]
    rows[0].metrics["score"] = 5.0  # the best score is not the closest to the threshold
    assert closest_infeasible(rows).trial_id == "near"
    best, _ = write_outputs(tmp_path, rows, ["r"], {"space": "x"})
    summary = json.loads((tmp_path / "best.json").read_text())
    assert best is None and summary["feasible"] is False and summary["trial_id"] == "near"
