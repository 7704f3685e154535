"""Per-layer latency tables (objective O4): a trial's profile on disk, and the best trial against the baseline."""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from edge_tune.device.profile import LayerTiming

__all__ = [
    "LayerComparison",
    "compare_layers",
    "format_layers",
    "read_comparison",
    "read_layers",
    "write_comparison",
    "write_csv",
    "write_layers",
]


def write_csv(path: Path, rows: list[dict[str, Any]], fieldnames: list[str] | None = None) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fieldnames or (list(rows[0]) if rows else []))
        writer.writeheader()
        writer.writerows(rows)


LAYER_FIELDS = ("module", "node", "node_type", "exec_type", "time_ms", "time_ms_min", "time_ms_max", "fused")


def write_layers(path: Path, layers: Sequence[LayerTiming]) -> None:
    """One row per executed OpenVINO node; ``fused`` joins the folded-in layers with '+'."""
    write_csv(path, [{**asdict(lt), "fused": "+".join(lt.fused)} for lt in layers], list(LAYER_FIELDS))


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
                float(r.get("time_ms_min") or "nan"),  # absent from profiles written before the spread was kept
                float(r.get("time_ms_max") or "nan"),
            )
            for r in csv.DictReader(f)
        ]


@dataclass(frozen=True)
class LayerComparison:
    """One PyTorch module's time per inference in the baseline and in the chosen trial."""

    module: str
    node_type: str
    baseline_ms: float  # NaN when the baseline has no such layer
    best_ms: float  # NaN when the trial has none (fused away, or the module was removed)
    speedup: float  # baseline_ms / best_ms
    exec_type_baseline: str  # OpenVINO's kernel
    exec_type_best: str
    fused: str  # layers folded in, joined by '+'
    baseline_min_ms: float = math.nan  # each time's spread: its range over the profile's repeats
    baseline_max_ms: float = math.nan
    best_min_ms: float = math.nan
    best_max_ms: float = math.nan


def compare_layers(baseline: Sequence[LayerTiming], best: Sequence[LayerTiming]) -> list[LayerComparison]:
    """Per module: baseline and best-trial time (ms), their ratio, and the kernels; slowest baseline layer first."""
    base = {lt.module: lt for lt in baseline}
    cand = {lt.module: lt for lt in best}
    rows = []
    for module in dict.fromkeys([*base, *cand]):
        b, c = base.get(module), cand.get(module)
        ref = b or c
        assert ref is not None
        rows.append(
            LayerComparison(
                module,
                ref.node_type,
                b.time_ms if b else math.nan,
                c.time_ms if c else math.nan,
                b.time_ms / c.time_ms if b and c and c.time_ms > 0 else math.nan,
                b.exec_type if b else "",
                c.exec_type if c else "",
                "+".join(ref.fused),
                b.time_ms_min if b else math.nan,
                b.time_ms_max if b else math.nan,
                c.time_ms_min if c else math.nan,
                c.time_ms_max if c else math.nan,
            )
        )
    return sorted(rows, key=lambda r: -r.baseline_ms if math.isfinite(r.baseline_ms) else math.inf)


def write_comparison(path: Path, rows: Sequence[LayerComparison]) -> None:
    write_csv(path, [asdict(r) for r in rows], [f.name for f in fields(LayerComparison)])


def read_comparison(path: Path) -> list[LayerComparison]:
    """``layers.csv`` of an experiment, typed; empty when there is none."""
    if not path.is_file():
        return []
    numeric = {f.name for f in fields(LayerComparison) if f.type == "float"}
    with open(path, newline="") as f:
        return [
            LayerComparison(**{k: float(v or "nan") if k in numeric else v for k, v in r.items()})  # type: ignore[arg-type]
            for r in csv.DictReader(f)
        ]


def format_layers(rows: Sequence[LayerComparison], top: int = 10) -> str:
    """The ``top`` slowest baseline layers against the best trial."""
    lines = [f"{'layer':28} {'kernel (best)':24} {'baseline ms':>11} {'best ms':>9} {'speedup':>8}"]
    for r in rows[:top]:
        lines.append(
            f"{r.module[:28]:28} {r.exec_type_best[:24]:24} {_fmt(r.baseline_ms):>11} "
            f"{_fmt(r.best_ms):>9} {_fmt(r.speedup):>8}"
        )
    return "\n".join(lines)


def _fmt(v: float) -> str:
    return f"{v:.4g}" if math.isfinite(v) else "-"
