"""Results: the ranked table, ``results.csv`` and ``results.json``, ``pareto.csv``, ``best.json`` and ``best/``.

Every trial is a ``TrialRow`` holding its typed ``TrialOutcome``. ``results.csv``
is for people and spreadsheets; ``results.json`` is what ``edge_tune.report``
and ``edge_tune.deliverable`` read back, typed (``read_results``).

Trials are compared on the interleaved speed-up and the judged top-1 (the
lower of PyTorch and device) only. Each trial's raw p50 stays in
``results.csv`` as a measurement beside the baseline's p50 from the same
interleaved rounds, but p50s taken minutes apart on a machine whose speed
drifts do not compare; where a time axis is wanted, ``latency_ms_normalised``
is the run's reference baseline p50 divided by the speed-up.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from edge_tune.deliverable import write_deliverable
from edge_tune.device.profile import LayerTiming
from edge_tune.errors import UserError
from edge_tune.kinds import kind_columns
from edge_tune.layers import LayerComparison, compare_layers, read_layers, write_comparison, write_csv
from edge_tune.outcome import TrialOutcome, TrialRow, finite, json_safe

__all__ = [
    "RESULTS_JSON",
    "closest_infeasible",
    "describe_runs",
    "format_front",
    "format_table",
    "pareto_front",
    "rank",
    "read_results",
    "rows_from_results",
    "trial_metrics",
    "write_outputs",
]

RESULTS_JSON = "results.json"

# Columns printed to the terminal; the CSV adds DETAIL_COLUMNS and the config.
SCREEN_COLUMNS = (
    "trial_id",
    "status",
    "feasible",
    "score",
    "speedup",
    "speedup_cv",
    "top1",
    "top1_device",
    "macs",
)
DETAIL_COLUMNS = (
    "top1_judged",
    "speedup_ci_low",
    "speedup_ci_high",
    "rounds",
    "converged",
    "latency_ms_normalised",
    "latency_ms",  # the trial's own p50, a measurement: compare trials by speed-up
    "baseline_latency_ms",  # the baseline's p50 in the same interleaved rounds
    "latency_ms_p90",
    "throughput_fps",
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
    "repeat",  # 0: a search trial; k: the k-th confirmation run of its configuration (edge_tune.confirm)
    "runs",  # confirmation: the judged top-1 of every run of this configuration
    "top1_mean",  # their mean
    "top1_lower",  # the mean less --confirm-margin standard errors: it decides feasibility where it is set
    "held",  # whether that bound held the threshold (blank: not repeated)
    "timestamp",  # when the trial reported last (Ray Tune's): the order of the search, for the report
)
COLUMNS = SCREEN_COLUMNS + DETAIL_COLUMNS
# pareto.csv: what compares across trials, and no raw p50.
FRONT_COLUMNS = (
    "trial_id",
    "feasible",
    "speedup",
    "speedup_ci_low",
    "speedup_ci_high",
    "latency_ms_normalised",
    "top1_judged",
    "top1",
    "top1_device",
    "macs",
    "score",
)


def rows_from_results(results: Any) -> list[TrialRow]:
    """One row per trial of a Ray Tune ``ResultGrid``: ``ok``, ``stopped`` (early, for accuracy) or ``error``."""
    from edge_tune.early_stop import STOPPED_FILE

    rows = []
    for r in results:
        metrics = dict(r.metrics or {})
        outcome = TrialOutcome.from_dict(metrics)
        ok = r.error is None and outcome.final
        trial_id = str(metrics.get("trial_id") or Path(r.path).name)
        error = "" if ok else (str(r.error).strip().splitlines()[-1] if r.error else "no final result")
        ckpt = Path(r.checkpoint.path) if ok and r.checkpoint is not None else None
        status = "ok" if ok else "error"
        stopped = Path(r.path, STOPPED_FILE)
        if not ok and r.error is None and stopped.is_file():
            status, error = "stopped", json.loads(stopped.read_text())["reason"]
            outcome.feasible = False
        stamp: Any = metrics.get("timestamp")
        rows.append(
            TrialRow(
                trial_id,
                status,
                dict(r.config or _params(Path(r.path))),
                outcome,
                error,
                ckpt,
                float(stamp) if finite(stamp) else math.nan,
            )
        )
    return rows


def _params(trial_dir: Path) -> dict[str, Any]:
    """A trial's config from the ``params.json`` Tune wrote when it started: an errored trial that reported
    nothing has no config in its result."""
    try:
        return dict(json.loads((trial_dir / "params.json").read_text()))
    except (OSError, ValueError, TypeError):
        return {}


def read_results(out_dir: Path) -> tuple[list[TrialRow], float]:
    """``results.json`` of a finished experiment: its rows, best first, and the reference baseline p50 (ms)."""
    path = out_dir / RESULTS_JSON
    if not path.is_file():
        raise UserError(f"{out_dir} is not a finished edge_tune experiment: it has no {RESULTS_JSON}")
    doc = json.loads(path.read_text())
    reference: Any = doc.get("reference_latency_ms")
    return [TrialRow.from_dict(t, out_dir) for t in doc["trials"]], float(reference) if finite(reference) else math.nan


def closest_infeasible(rows: list[TrialRow]) -> TrialRow | None:
    """Of the trials that finished, the one nearest the threshold (largest constraint), then the best score."""

    def key(r: TrialRow) -> tuple[float, float]:
        c = r.shortfall  # over the runs of a confirmed configuration, their mean
        return (c if finite(c) else -math.inf, r.score)

    return max((r for r in rows if r.status == "ok" and not r.feasible), key=key, default=None)


def describe_runs(row: TrialRow) -> str:
    """What confirmation found, where it repeated the row's configuration; empty where it did not."""
    if not row.runs:
        return ""
    each = ", ".join(f"{v:.2f}" for v in row.runs)
    held = {True: "held", False: "not held", None: "not all run"}[row.held]
    bound = f", {row.top1_lower:.2f}% less the margin" if finite(row.top1_lower) else ""
    return f"; mean top1 {row.top1_mean:.2f}%{bound} over {len(row.runs)} fine-tunes ({each}), {held}"


def pareto_front(rows: list[TrialRow]) -> list[TrialRow]:
    """Finished trials no other trial beats on both judged top-1 and speed-up, fastest first.

    The best feasible trial is always on it: its score grows with both, so a trial
    that dominated it would score higher, be feasible too, and be the best.
    """
    points = [
        (r.outcome.top1_judged, r.outcome.speedup, r)
        for r in rows
        if r.status == "ok" and finite(r.outcome.top1_judged) and finite(r.outcome.speedup)
    ]
    front = [r for a, s, r in points if not any(b >= a and t >= s and (b > a or t > s) for b, t, _ in points)]
    return sorted(front, key=lambda r: -r.outcome.speedup)


def rank(rows: list[TrialRow]) -> list[TrialRow]:
    """Feasible trials by score, then infeasible ones by score, then stopped and errored ones."""
    return sorted(rows, key=lambda r: (not r.feasible, r.status != "ok", r.status != "stopped", -r.score))


def format_front(front: list[TrialRow], reference_ms: float) -> str:
    """The printed Pareto front: speed-up, normalised latency and judged top-1 of each trial."""
    lines = [
        "Pareto front (judged top-1, the lower of PyTorch and device, against the interleaved speed-up), "
        f"fastest first; latency normalised to the baseline's {reference_ms:.3f} ms p50:"
    ]
    for r in front:
        o = r.outcome
        lines.append(
            f"  {r.trial_id}: {o.speedup:.3f}x (95% CI {o.speedup_ci_low:.3f}-{o.speedup_ci_high:.3f}), "
            f"{o.latency_ms_normalised(reference_ms):.3f} ms normalised, top1 {o.top1_judged:.2f}%"
            + ("" if r.feasible else "  (below threshold)")
        )
    return "\n".join(lines)


def _fmt(v: Any) -> str:
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.4g}" if math.isfinite(v) else "-"
    return "-" if v is None else str(v)


def trial_metrics(row: TrialRow, reference_ms: float) -> dict[str, Any]:
    """A trial's config and measurements, flat, for ``metrics.json`` of its deliverable."""
    return json_safe({**_values(row, reference_ms), "config": row.config})


def _values(row: TrialRow, reference_ms: float) -> dict[str, Any]:
    """The row's outcome with its derived values (judged top-1, normalised latency) and identity."""
    o = row.outcome
    values = {
        **o.to_dict(),
        "top1_judged": o.top1_judged,
        "latency_ms_normalised": o.latency_ms_normalised(reference_ms),
    }
    values.update(trial_id=row.trial_id, status=row.status, feasible=row.feasible, timestamp=row.timestamp)
    values.update(repeat=row.repeat, runs=list(row.runs) or None, top1_mean=row.top1_mean if row.runs else None)
    values.update(held=row.held, top1_lower=row.top1_lower if row.runs else None)
    return values


def _table_row(
    row: TrialRow,
    params: list[str],
    reference_ms: float = math.nan,
    out_dir: Path | None = None,
    columns: Sequence[str] = COLUMNS,
) -> dict[str, Any]:
    values = _values(row, reference_ms)
    if row.status != "ok":  # nothing measured on the device: blank, not zeros
        keep = ("trial_id", "status", "feasible", "epoch", "top1", "repeat")
        values = {k: v for k, v in values.items() if k in keep}
    base = {c: values.get(c) for c in columns}
    if row.status == "ok" and columns is COLUMNS:  # --also-device: each kind's own numbers (edge_tune.kinds)
        base.update(kind_columns(row.outcome.kinds))
    base.update({f"config/{p}": row.config.get(p) for p in params})
    if row.error:
        base["error"] = row.error
    if out_dir is not None:  # where the trial's model is, for python -m edge_tune.deliverable
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
) -> tuple[TrialRow | None, list[LayerComparison]]:
    """Write results.csv and results.json, pareto.csv, best.json, best/ (edge_tune.deliverable) and layers.csv.

    Returns the best feasible row (None if none) and the per-layer comparison of
    the chosen trial against the baseline (empty if it has no profile).
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    reference = float((experiment.get("baseline") or {}).get("latency_ms", math.nan))
    ranked = rank(rows)
    table = [_table_row(r, params, reference, out_dir) for r in ranked]
    write_csv(out_dir / "results.csv", table, list(dict.fromkeys(k for row in table for k in row)))
    doc = {"reference_latency_ms": reference, "params": params, "trials": [r.to_dict(out_dir) for r in ranked]}
    (out_dir / RESULTS_JSON).write_text(json.dumps(json_safe(doc), indent=2, default=str))
    front = [_table_row(r, params, reference, columns=FRONT_COLUMNS) for r in pareto_front(rows)]
    write_csv(out_dir / "pareto.csv", front, [*FRONT_COLUMNS, *[f"config/{p}" for p in params]])
    best = next((r for r in ranked if r.feasible), None)
    chosen = best or closest_infeasible(rows)
    layers: list[LayerComparison] = []
    summary: dict[str, Any] = {"experiment": experiment, "feasible": best is not None}
    if best is not None:
        summary["faster_than_baseline"] = best.outcome.faster_than_baseline()
        if (experiment.get("confirm") or {}).get("fine_tunes"):  # its mean held; False: it rests on one fine-tune
            summary["confirmed"] = best.held is True
    if chosen is not None:
        schedule = finetune = None
        if chosen.checkpoint is not None:
            schedule = yaml.safe_load((chosen.checkpoint / "schedule.yaml").read_text())
            if (chosen.checkpoint / "finetune.json").exists():  # the fine-tuning it had, every value filled in
                finetune = json.loads((chosen.checkpoint / "finetune.json").read_text())
            write_deliverable(chosen.checkpoint, out_dir / "best", trial_metrics(chosen, reference))
            if (chosen.checkpoint / "layers.csv").exists():
                # The baseline profiled interleaved with this trial's model, where the trial kept it.
                alongside = chosen.checkpoint / "baseline_layers.csv"
                base = read_layers(alongside) if alongside.exists() else baseline_layers
                layers = compare_layers(base, read_layers(chosen.checkpoint / "layers.csv"))
                write_comparison(out_dir / "layers.csv", layers)
            for kind_layers in sorted(chosen.checkpoint.glob("layers_*.csv")):  # --also-device: each other kind's
                alongside = chosen.checkpoint / f"baseline_{kind_layers.name}"
                if alongside.exists():
                    compared = compare_layers(read_layers(alongside), read_layers(kind_layers))
                    write_comparison(out_dir / kind_layers.name, compared)
        summary |= {
            "trial_id": chosen.trial_id,
            "config": chosen.config,
            "metrics": _values(chosen, reference),
            "schedule": schedule,
            "finetune": finetune,
        }
    (out_dir / "best.json").write_text(json.dumps(json_safe(summary), indent=2, default=str))
    return best, layers
