"""Results: the ranked table, ``results.csv``, ``best.json`` and the best model as ONNX."""

from __future__ import annotations

import csv
import json
import math
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

__all__ = ["TrialRow", "format_table", "rank", "rows_from_results", "write_outputs"]

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
DETAIL_COLUMNS = ("top5", "top5_device", "params", "macs_ratio", "latency_ms_p90", "baseline_latency_ms", "precision")
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
    """One row per trial of a Ray Tune ``ResultGrid``."""
    rows = []
    for r in results:
        metrics = dict(r.metrics or {})
        ok = r.error is None and metrics.get("final") is True
        trial_id = str(metrics.get("trial_id") or Path(r.path).name)
        error = "" if ok else (str(r.error).strip().splitlines()[-1] if r.error else "no final result")
        ckpt = Path(r.checkpoint.path) if ok and r.checkpoint is not None else None
        rows.append(TrialRow(trial_id, "ok" if ok else "error", dict(r.config or {}), metrics, error, ckpt))
    return rows


def rank(rows: list[TrialRow]) -> list[TrialRow]:
    """Feasible trials by score, then infeasible ones by score, then errored ones."""
    return sorted(rows, key=lambda r: (not r.feasible, r.status != "ok", -r.score))


def _fmt(v: Any) -> str:
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.4g}" if math.isfinite(v) else "-"
    return "-" if v is None else str(v)


def _table_row(row: TrialRow, params: list[str]) -> dict[str, Any]:
    base = {c: row.metrics.get(c) for c in COLUMNS}
    base.update(trial_id=row.trial_id, status=row.status, feasible=row.feasible)
    base.update({f"config/{p}": row.config.get(p) for p in params})
    if row.error:
        base["error"] = row.error
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
    out_dir: Path, rows: list[TrialRow], params: list[str], experiment: dict[str, Any]
) -> TrialRow | None:
    """Write results.csv, best.json and best.onnx; returns the best feasible row, if any."""
    out_dir.mkdir(parents=True, exist_ok=True)
    ranked = rank(rows)
    table = [_table_row(r, params) for r in ranked]
    fieldnames = list(dict.fromkeys(k for row in table for k in row))
    with open(out_dir / "results.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fieldnames)
        writer.writeheader()
        writer.writerows(table)
    best = next((r for r in ranked if r.feasible), None)
    chosen = best or next((r for r in ranked if r.status == "ok"), None)
    summary: dict[str, Any] = {"experiment": experiment, "feasible": best is not None}
    if chosen is not None:
        schedule = None
        if chosen.checkpoint is not None:
            schedule = yaml.safe_load((chosen.checkpoint / "schedule.yaml").read_text())
            shutil.copyfile(chosen.checkpoint / "model.onnx", out_dir / "best.onnx")
        summary |= {
            "trial_id": chosen.trial_id,
            "config": chosen.config,
            "metrics": {k: v for k, v in chosen.metrics.items() if _jsonable(v)},
            "schedule": schedule,
        }
    (out_dir / "best.json").write_text(json.dumps(summary, indent=2, default=str))
    return best


def _jsonable(v: Any) -> bool:
    return isinstance(v, (str, int, float, bool, dict, list)) or v is None
