"""Results: the ranked table, ``results.csv``, ``pareto.csv``, ``best.json`` and the best model in ``best/``."""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from edge_tune.device.profile import LayerTiming
from edge_tune.export import write_deliverable

__all__ = [
    "TrialRow",
    "closest_infeasible",
    "compare_layers",
    "format_layers",
    "format_table",
    "pareto_front",
    "rank",
    "rows_from_results",
    "write_layers",
    "write_outputs",
]

# Columns printed to the terminal; the CSV adds DETAIL_COLUMNS and the config.
SCREEN_COLUMNS = (
    "trial_id",
    "status",
    "feasible",
    "score",
    "speedup",
    "speedup_cv",
    "latency_ms",
    "top1",
    "top1_device",
    "macs",
)
DETAIL_COLUMNS = (
    "speedup_ci_low",
    "speedup_ci_high",
    "rounds",
    "converged",
    "latency_ms_p90",
    "throughput_fps",
    "baseline_latency_ms",
    "top5",
    "top5_device",
    "device_gap_flag",
    "params",
    "zeros",
    "int8",
    "macs_ratio",
    "ov_macs",
    "precision",
    "compile_s",
    "first_inference_ms",
    "latency_cached",
    "timestamp",  # when the trial reported last (Ray Tune's): the order of the search, for the report
)
COLUMNS = SCREEN_COLUMNS + DETAIL_COLUMNS


@dataclass
class TrialRow:
    trial_id: str
    status: str  # ok | error
    config: dict[str, Any]
    metrics: dict[str, Any]
    error: str = ""
    checkpoint: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def feasible(self) -> bool:
        return self.status == "ok" and bool(self.metrics.get("feasible"))

    @property
    def score(self) -> float:
        s = self.metrics.get("score")
        return float(s) if isinstance(s, (int, float)) and math.isfinite(s) else -math.inf


def rows_from_results(results: Any) -> list[TrialRow]:
    """One row per trial of a Ray Tune ``ResultGrid``: ``ok``, ``stopped`` (early, for accuracy) or ``error``."""
    from edge_tune.early_stop import STOPPED_FILE

    rows = []
    for r in results:
        metrics = dict(r.metrics or {})
        ok = r.error is None and metrics.get("final") is True
        trial_id = str(metrics.get("trial_id") or Path(r.path).name)
        error = "" if ok else (str(r.error).strip().splitlines()[-1] if r.error else "no final result")
        ckpt = Path(r.checkpoint.path) if ok and r.checkpoint is not None else None
        status = "ok" if ok else "error"
        stopped = Path(r.path, STOPPED_FILE)
        if not ok and r.error is None and stopped.is_file():
            status, error = "stopped", json.loads(stopped.read_text())["reason"]
            metrics["feasible"] = False
        rows.append(TrialRow(trial_id, status, dict(r.config or {}), metrics, error, ckpt))
    return rows


def closest_infeasible(rows: list[TrialRow]) -> TrialRow | None:
    """Of the trials that finished, the one nearest the threshold (largest constraint), then the best score."""

    def key(r: TrialRow) -> tuple[float, float]:
        c = r.metrics.get("constraint")
        return (float(c) if isinstance(c, (int, float)) and math.isfinite(c) else -math.inf, r.score)

    return max((r for r in rows if r.status == "ok"), key=key, default=None)


def pareto_front(rows: list[TrialRow]) -> list[TrialRow]:
    """Finished trials no other trial beats on both top-1 (the lower of PyTorch and device) and latency,
    fastest first."""
    points = []
    for r in rows:
        top1, latency = r.metrics.get("top1"), r.metrics.get("latency_ms")
        if r.status == "ok" and isinstance(top1, (int, float)) and isinstance(latency, (int, float)):
            points.append((min(top1, r.metrics.get("top1_device", top1)), latency, r))
    front = [r for a, la, r in points if not any(b >= a and lb <= la and (b > a or lb < la) for b, lb, _ in points)]
    return sorted(front, key=lambda r: r.metrics["latency_ms"])


def rank(rows: list[TrialRow]) -> list[TrialRow]:
    """Feasible trials by score, then infeasible ones by score, then stopped and errored ones."""
    return sorted(rows, key=lambda r: (not r.feasible, r.status != "ok", r.status != "stopped", -r.score))


def _fmt(v: Any) -> str:
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.4g}" if math.isfinite(v) else "-"
    return "-" if v is None else str(v)


def _table_row(row: TrialRow, params: list[str], out_dir: Path | None = None) -> dict[str, Any]:
    base = {c: row.metrics.get(c) for c in COLUMNS}
    base.update(trial_id=row.trial_id, status=row.status, feasible=row.feasible)
    base.update({f"config/{p}": row.config.get(p) for p in params})
    if row.error:
        base["error"] = row.error
    if out_dir is not None:  # where the trial's model is, for python -m edge_tune.export
        base["checkpoint"] = os.path.relpath(row.checkpoint, out_dir) if row.checkpoint else ""
    return base


def format_table(rows: list[TrialRow], params: list[str]) -> str:
    cols = [*SCREEN_COLUMNS, *[f"config/{p}" for p in params]]
    cells = [[_fmt(_table_row(r, params).get(c)) for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) if cells else len(c) for i, c in enumerate(cols)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in cells]
    errors = [f"  {r.trial_id}: {r.error}" for r in rows if r.status == "error"]
    return "\n".join(lines + (["errored trials:", *errors] if errors else []))


def write_outputs(
    out_dir: Path,
    rows: list[TrialRow],
    params: list[str],
    experiment: dict[str, Any],
    baseline_layers: Sequence[LayerTiming] = (),
) -> tuple[TrialRow | None, list[dict[str, Any]]]:
    """Write results.csv, pareto.csv, best.json, best/ (edge_tune.export) and layers.csv.

    Returns the best feasible row (None if none) and the per-layer comparison of
    the chosen trial against the baseline (empty if it has no profile).
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    ranked = rank(rows)
    table = [_table_row(r, params, out_dir) for r in ranked]
    fieldnames = list(dict.fromkeys(k for row in table for k in row))
    _write_csv(out_dir / "results.csv", table, fieldnames)
    front = [_table_row(r, params) for r in pareto_front(rows)]
    _write_csv(out_dir / "pareto.csv", front, list(dict.fromkeys(k for row in front for k in row)) or ["trial_id"])
    best = next((r for r in ranked if r.feasible), None)
    chosen = best or closest_infeasible(rows)
    layers: list[dict[str, Any]] = []
    summary: dict[str, Any] = {"experiment": experiment, "feasible": best is not None}
    if chosen is not None:
        schedule = None
        if chosen.checkpoint is not None:
            schedule = yaml.safe_load((chosen.checkpoint / "schedule.yaml").read_text())
            row = {k: v for k, v in _table_row(chosen, params).items() if v is not None}
            write_deliverable(chosen.checkpoint, out_dir / "best", row)
            if (chosen.checkpoint / "layers.csv").exists():
                layers = compare_layers(baseline_layers, read_layers(chosen.checkpoint / "layers.csv"))
                _write_csv(out_dir / "layers.csv", layers)
        summary |= {
            "trial_id": chosen.trial_id,
            "config": chosen.config,
            "metrics": {k: v for k, v in chosen.metrics.items() if _jsonable(v)},
            "schedule": schedule,
        }
    (out_dir / "best.json").write_text(json.dumps(summary, indent=2, default=str))
    return best, layers


def _write_csv(path: Path, rows: list[dict[str, Any]], fieldnames: list[str] | None = None) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fieldnames or (list(rows[0]) if rows else []))
        writer.writeheader()
        writer.writerows(rows)


LAYER_FIELDS = ("module", "node", "node_type", "exec_type", "time_ms", "fused")


def write_layers(path: Path, layers: Sequence[LayerTiming]) -> None:
    """One row per executed OpenVINO node; ``fused`` joins the folded-in layers with '+'."""
    _write_csv(path, [{**asdict(lt), "fused": "+".join(lt.fused)} for lt in layers], list(LAYER_FIELDS))


def read_layers(path: Path) -> list[LayerTiming]:
    with open(path, newline="") as f:
        return [
            LayerTiming(
                r["node"],
                r["module"],
                r["node_type"],
                r["exec_type"],
                float(r["time_ms"]),
                tuple(x for x in r["fused"].split("+") if x),
            )
            for r in csv.DictReader(f)
        ]


def compare_layers(baseline: Sequence[LayerTiming], best: Sequence[LayerTiming]) -> list[dict[str, Any]]:
    """Per module: baseline and best-trial time (ms), their ratio, and the kernels; slowest baseline layer first."""
    base = {lt.module: lt for lt in baseline}
    cand = {lt.module: lt for lt in best}
    rows = []
    for module in dict.fromkeys([*base, *cand]):
        b, c = base.get(module), cand.get(module)
        ref = b or c
        assert ref is not None
        rows.append(
            {
                "module": module,
                "node_type": ref.node_type,
                "baseline_ms": b.time_ms if b else math.nan,
                "best_ms": c.time_ms if c else math.nan,
                "speedup": b.time_ms / c.time_ms if b and c and c.time_ms > 0 else math.nan,
                "exec_type_baseline": b.exec_type if b else "",
                "exec_type_best": c.exec_type if c else "",
                "fused": "+".join(ref.fused),
            }
        )
    return sorted(rows, key=lambda r: -r["baseline_ms"] if math.isfinite(r["baseline_ms"]) else math.inf)


def format_layers(rows: list[dict[str, Any]], top: int = 10) -> str:
    """The ``top`` slowest baseline layers against the best trial."""
    lines = [f"{'layer':28} {'kernel (best)':24} {'baseline ms':>11} {'best ms':>9} {'speedup':>8}"]
    for r in rows[:top]:
        lines.append(
            f"{r['module'][:28]:28} {r['exec_type_best'][:24]:24} {_fmt(r['baseline_ms']):>11} "
            f"{_fmt(r['best_ms']):>9} {_fmt(r['speedup']):>8}"
        )
    return "\n".join(lines)


def _jsonable(v: Any) -> bool:
    return isinstance(v, (str, int, float, bool, dict, list)) or v is None
