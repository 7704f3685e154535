"""The experiment report: ``report.html`` with PNG figures, from an experiment folder's files.

    python -m edge_tune.report EXPERIMENT_DIR     # also run at the end of every search

Figures (in ``figures/``): the Pareto front of latency against top-1 with the
threshold and the baseline; search progress (each trial's speed-up in the
order trials finished, and the best feasible so far); per-layer latency of
the chosen trial against the baseline. Then the trial table. Everything is
read from ``results.csv``, ``best.json`` and ``layers.csv``, so a report can
be rebuilt at any time, also for an experiment copied off the cluster.
"""

from __future__ import annotations

import argparse
import csv
import html
import json
import math
import sys
from pathlib import Path
from typing import Any

from edge_tune.errors import UserError, exit_code

__all__ = ["main", "write_report"]

FEASIBLE, INFEASIBLE, BASELINE, THRESHOLD = "#1f77b4", "#9a9a9a", "#000000", "#d62728"
TABLE_COLUMNS = (
    ("trial_id", "trial"),
    ("status", "status"),
    ("feasible", "feasible"),
    ("speedup", "speed-up ×"),
    ("speedup_ci_low", "95% CI low"),
    ("speedup_ci_high", "95% CI high"),
    ("latency_ms", "latency ms (p50)"),
    ("top1", "top-1 % PyTorch"),
    ("top1_device", "top-1 % device"),
    ("macs", "MACs"),
)


def _float(v: Any) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def _top1(row: dict[str, str]) -> float:
    """The accuracy the search judged: the lower of PyTorch and device."""
    return min(_float(row.get("top1")), _float(row.get("top1_device")) if row.get("top1_device") else math.inf)


def _csv(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _read(
    experiment: Path,
) -> tuple[list[dict[str, str]], dict[str, Any], list[dict[str, str]], list[dict[str, str]]]:
    """results.csv, best.json, pareto.csv (``results.pareto_front``'s trials, fastest first) and layers.csv."""
    if not (experiment / "results.csv").is_file() or not (experiment / "best.json").is_file():
        raise UserError(f"{experiment} is not a finished edge_tune experiment: it has no results.csv or best.json")
    best = json.loads((experiment / "best.json").read_text())
    return _csv(experiment / "results.csv"), best, _csv(experiment / "pareto.csv"), _csv(experiment / "layers.csv")


def _pareto_figure(rows: list[dict[str, str]], front: list[dict[str, str]], best: dict[str, Any], path: Path) -> None:
    import matplotlib.pyplot as plt

    exp = best["experiment"]
    base = exp["baseline"]
    done = [r for r in rows if r["status"] == "ok" and math.isfinite(_float(r.get("latency_ms")))]
    fig, ax = plt.subplots(figsize=(7.5, 5))
    for feasible, color, label in ((True, FEASIBLE, "feasible trial"), (False, INFEASIBLE, "below the threshold")):
        pts = [r for r in done if (r["feasible"] == "True") == feasible]
        ax.scatter(
            [_float(r["latency_ms"]) for r in pts],
            [_top1(r) for r in pts],
            c=color if feasible else "none",
            edgecolors=color,
            s=40,
            label=f"{label} ({len(pts)})",
            zorder=3,
        )
    if len(front) > 1:
        ax.step(
            [_float(r["latency_ms"]) for r in front],
            [_top1(r) for r in front],
            where="post",
            color=FEASIBLE,
            alpha=0.5,
            label=f"Pareto front ({len(front)} trials)",
        )
    base_top1 = min(base["top1"], base.get("top1_device", base["top1"]))
    ax.scatter([base["latency_ms"]], [base_top1], marker="*", s=220, c=BASELINE, label="baseline (unpruned)", zorder=4)
    ax.axhline(exp["threshold_top1"], color=THRESHOLD, ls="--", lw=1, label=f"threshold {exp['threshold_top1']:.2f}%")
    if best.get("feasible") and best.get("metrics"):
        m = best["metrics"]
        x, y = m["latency_ms"], min(m["top1"], m.get("top1_device", m["top1"]))
        ax.scatter([x], [y], s=180, facecolors="none", edgecolors=THRESHOLD, lw=2, zorder=5)
        ax.annotate(
            f"best: {best['trial_id']} ({m['speedup']:.2f}× faster)",
            (x, y),
            textcoords="offset points",
            xytext=(10, -18),
            fontsize=9,
        )
    ax.set_xlabel("latency on the device, ms (median of batch-1 inferences)")
    ax.set_ylabel("top-1 accuracy, % (lower of PyTorch and device)")
    ax.set_title(f"{exp['space']}: {exp['model']} on {exp['dataset']}, latency against accuracy")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _progress_figure(rows: list[dict[str, str]], path: Path) -> None:
    import matplotlib.pyplot as plt

    ordered = sorted(rows, key=lambda r: _float(r.get("timestamp")) if r.get("timestamp") else math.inf)
    n = range(1, len(ordered) + 1)
    best, curve = math.nan, []
    for r in ordered:
        if r["feasible"] == "True":
            best = max(_float(r["speedup"]), best) if math.isfinite(best) else _float(r["speedup"])
        curve.append(best)
    fig, ax = plt.subplots(figsize=(7.5, 4))
    for feasible, color, marker, label in (
        (True, FEASIBLE, "o", "feasible trial"),
        (False, INFEASIBLE, "x", "infeasible trial"),
    ):
        pts = [
            (i, r)
            for i, r in zip(n, ordered, strict=True)
            if r["status"] == "ok" and (r["feasible"] == "True") == feasible
        ]
        ax.scatter([i for i, _ in pts], [_float(r["speedup"]) for _, r in pts], c=color, marker=marker, label=label)
    if any(math.isfinite(c) for c in curve):
        ax.step(list(n), curve, where="post", color=FEASIBLE, lw=2, label="best feasible so far")
    else:
        ax.text(0.5, 0.5, "no feasible trial", transform=ax.transAxes, ha="center", color=THRESHOLD)
    ax.axhline(1.0, color=BASELINE, lw=0.8, ls=":", label="baseline (1×)")
    stopped = sum(r["status"] != "ok" for r in rows)
    ax.set_xlabel("trial, in the order trials finished" + (f" ({stopped} stopped early or errored)" if stopped else ""))
    ax.set_ylabel("speed-up over the baseline, ×")
    ax.set_title("Search progress")
    ax.set_xticks(list(n) if len(ordered) <= 20 else ax.get_xticks())
    ax.set_xlim(0.5, len(ordered) + 0.5)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _layers_figure(layers: list[dict[str, str]], trial: str, path: Path, top: int = 12) -> None:
    import matplotlib.pyplot as plt
    import numpy as np

    shown = layers[:top][::-1]  # the slowest baseline layers, slowest at the top
    y = np.arange(len(shown))
    fig, ax = plt.subplots(figsize=(7.5, 0.35 * len(shown) + 1.5))
    ax.barh(y + 0.2, [_float(r["baseline_ms"]) for r in shown], 0.4, color=INFEASIBLE, label="baseline")
    ax.barh(y - 0.2, [_float(r["best_ms"]) for r in shown], 0.4, color=FEASIBLE, label=f"trial {trial}")
    ax.set_yticks(y, [f"{r['module']} ({r['node_type']})" for r in shown], fontsize=8)
    ax.set_xlabel("time per inference, ms (OpenVINO per-layer counters)")
    ax.set_title(f"Per-layer latency, the {len(shown)} slowest baseline layers")
    ax.grid(axis="x", alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _cell(key: str, v: str) -> str:
    f = _float(v)
    if key == "macs" and math.isfinite(f):
        return f"{f / 1e6:.1f} M"
    if key.startswith("config/") or key in (
        "speedup",
        "speedup_ci_low",
        "speedup_ci_high",
        "latency_ms",
        "top1",
        "top1_device",
    ):
        return f"{f:.3f}" if math.isfinite(f) else "–"
    return html.escape(v or "–")


def write_report(experiment: Path) -> Path:
    """Write ``figures/*.png`` and ``report.html`` in ``experiment``; returns the HTML's path."""
    import matplotlib

    matplotlib.use("Agg")
    rows, best, front, layers = _read(experiment)
    exp = best["experiment"]
    figures = experiment / "figures"
    figures.mkdir(exist_ok=True)
    shown: list[tuple[str, str]] = []
    _pareto_figure(rows, front, best, figures / "pareto.png")
    shown.append(("pareto.png", "Every finished trial's latency against its top-1. Filled: at or above the threshold."))
    _progress_figure(rows, figures / "progress.png")
    shown.append(
        ("progress.png", "Each trial's speed-up in the order trials finished; the line is the best feasible so far.")
    )
    if layers and best.get("trial_id"):
        _layers_figure(layers, best["trial_id"], figures / "layers.png")
        which = "the best feasible trial" if best.get("feasible") else "the trial closest to the threshold (infeasible)"
        shown.append(("layers.png", f"Where the time goes: {which}, {best['trial_id']}, against the baseline."))
    params = [k for k in (rows[0] if rows else {}) if k.startswith("config/")]
    head = "".join(f"<th>{html.escape(label)}</th>" for _, label in TABLE_COLUMNS)
    head += "".join(f"<th>{html.escape(p.removeprefix('config/'))}</th>" for p in params) + "<th>error</th>"
    body = "\n".join(
        f"<tr class='{'feasible' if r['feasible'] == 'True' else r['status']}'>"
        + "".join(f"<td>{_cell(k, r.get(k, ''))}</td>" for k, _ in TABLE_COLUMNS)
        + "".join(f"<td>{_cell(p, r.get(p, ''))}</td>" for p in params)
        + f"<td>{html.escape(r.get('error', ''))}</td></tr>"
        for r in rows
    )
    base = exp["baseline"]
    if best.get("feasible"):
        m = best["metrics"]
        verdict = (
            f"Best feasible trial <b>{html.escape(best['trial_id'])}</b>: <b>{m['speedup']:.3f}× faster</b> "
            f"(95% CI {m.get('speedup_ci_low', math.nan):.3f}–{m.get('speedup_ci_high', math.nan):.3f}), "
            f"{m['latency_ms']:.3f} ms against {base['latency_ms']:.3f} ms, top-1 {m['top1']:.2f}% in PyTorch and "
            f"{m.get('top1_device', math.nan):.2f}% on the device; its model is in <code>best/</code>."
        )
    else:
        m, tid = best.get("metrics") or {}, best.get("trial_id")
        closest = (
            f" The closest was {html.escape(tid)}: top-1 {m.get('top1', math.nan):.2f}% "
            f"({-m.get('constraint', math.nan):.2f} points short), {m.get('speedup', math.nan):.3f}× faster."
            if tid
            else ""
        )
        verdict = f"<b>No trial reached the threshold.</b>{closest} Try a lower threshold or more fine-tuning epochs."
    figs = "\n".join(
        f"<figure><img src='figures/{name}' alt='{html.escape(text)}'>"
        f"<figcaption>{html.escape(text)}</figcaption></figure>"
        for name, text in shown
    )
    e = html.escape
    setup = (
        f"Space <b>{e(exp['space'])}</b>, model {e(exp['model'])} on {e(exp['dataset'])}; "
        f"searcher {e(str(exp.get('searcher', '')))}, {len(rows)} trials; "
        f"device {e(str(exp['device'].get('device', '')))} ({e(str(exp.get('precision', '')))}). "
        f"Baseline: top-1 {base['top1']:.2f}% (device {base.get('top1_device', math.nan):.2f}%), "
        f"{base['latency_ms']:.3f} ms, {base['macs'] / 1e6:.1f} M MACs. "
        f"Threshold: top-1 ≥ {exp['threshold_top1']:.2f}%."
    )
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>edge_tune: {e(experiment.name)}</title>
<style>
body {{ font-family: sans-serif; max-width: 1100px; margin: 2em auto; color: #222; }}
table {{ border-collapse: collapse; font-size: 13px; }}
td, th {{ border: 1px solid #ccc; padding: 3px 6px; text-align: right; white-space: nowrap; }}
th {{ background: #f0f0f0; }} tr.feasible td {{ background: #eef5fb; }} tr.stopped td, tr.error td {{ color: #888; }}
figure {{ margin: 1.5em 0; }} figcaption {{ font-size: 13px; color: #555; }} img {{ max-width: 100%; }}
</style></head><body>
<h1>edge_tune: {e(experiment.name)}</h1>
<p>{setup}</p>
<p>{verdict}</p>
{figs}
<h2>Trials</h2>
<p>Best feasible first. Top-1 is judged as the lower of PyTorch and device; speed-up is the baseline's latency over
the trial's, measured interleaved on the device.</p>
<table><tr>{head}</tr>
{body}
</table>
</body></html>
"""
    out = experiment / "report.html"
    out.write_text(page)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m edge_tune.report", description=__doc__.split("\n")[0])
    p.add_argument("experiment", type=Path, help="the experiment folder (edge_tune_results/<name>)")
    args = p.parse_args(argv)
    return exit_code("edge_tune.report", lambda: print(f"report: {write_report(args.experiment)}"))


if __name__ == "__main__":
    sys.exit(main())
