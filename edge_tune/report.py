"""The experiment report: ``report.html`` with PNG figures, from an experiment folder's files.

    python -m edge_tune.report EXPERIMENT_DIR     # also run at the end of every search

Figures (in ``figures/``): the Pareto front of latency against top-1 with the
threshold and the baseline; search progress (each trial's speed-up in the
order trials finished, and the best feasible so far); per-layer latency of
the chosen trial against the baseline. Then the trial table. Everything is
read from ``results.json`` (typed), ``best.json`` and ``layers.csv``, so a
report can be rebuilt at any time, also for an experiment copied off the cluster.

Trials are placed by their interleaved speed-up; the Pareto figure's time
axis is the latency normalised to the run's baseline measurement (its p50
divided by each trial's speed-up), so a point's position and its "1.35x"
label agree, whatever the machine's speed did between measurements.
"""

from __future__ import annotations

import argparse
import html
import json
import math
import sys
from pathlib import Path
from typing import Any

from edge_tune.errors import UserError, exit_code
from edge_tune.kinds import kind_slug
from edge_tune.layers import LayerComparison, read_comparison
from edge_tune.outcome import TrialOutcome, TrialRow, finite
from edge_tune.results import describe_runs, pareto_front, read_results

__all__ = ["main", "write_report"]

FEASIBLE, INFEASIBLE, BASELINE, THRESHOLD = "#1f77b4", "#9a9a9a", "#000000", "#d62728"
TABLE_COLUMNS = (  # (TrialOutcome field or row attribute, header)
    ("trial_id", "trial"),
    ("status", "status"),
    ("feasible", "feasible"),
    ("speedup", "speed-up ×"),
    ("speedup_ci_low", "95% CI low"),
    ("speedup_ci_high", "95% CI high"),
    ("latency_ms", "own p50, ms"),
    ("top1", "top-1 % PyTorch"),
    ("top1_device", "top-1 % device"),
    ("macs", "MACs"),
)


def _read(experiment: Path) -> tuple[list[TrialRow], float, dict[str, Any], list[LayerComparison]]:
    """results.json's rows and reference p50 (ms), best.json, and layers.csv."""
    if not (experiment / "best.json").is_file():
        raise UserError(f"{experiment} is not a finished edge_tune experiment: it has no best.json")
    rows, reference = read_results(experiment)
    return (
        rows,
        reference,
        json.loads((experiment / "best.json").read_text()),
        read_comparison(experiment / "layers.csv"),
    )


def _pareto_figure(rows: list[TrialRow], reference_ms: float, best: dict[str, Any], path: Path) -> None:
    import matplotlib.pyplot as plt

    exp = best["experiment"]
    base = exp["baseline"]
    done = [r for r in rows if r.status == "ok" and finite(r.outcome.speedup)]
    front = pareto_front(rows)

    def x(o: TrialOutcome) -> float:
        return o.latency_ms_normalised(reference_ms)

    fig, ax = plt.subplots(figsize=(7.5, 5))
    for feasible, color, label in ((True, FEASIBLE, "feasible trial"), (False, INFEASIBLE, "below the threshold")):
        pts = [r.outcome for r in done if r.feasible == feasible]
        ax.scatter(
            [x(o) for o in pts],
            [o.top1_judged for o in pts],
            c=color if feasible else "none",
            edgecolors=color,
            s=40,
            label=f"{label} ({len(pts)})",
            zorder=3,
        )
    if len(front) > 1:
        ax.step(
            [x(r.outcome) for r in front],  # fastest first: normalised latency ascending
            [r.outcome.top1_judged for r in front],
            where="post",
            color=FEASIBLE,
            alpha=0.5,
            label=f"Pareto front ({len(front)} trials)",
        )
    base_top1 = min(base["top1"], base.get("top1_device") or base["top1"])
    ax.scatter([reference_ms], [base_top1], marker="*", s=220, c=BASELINE, label="baseline (1.00×)", zorder=4)
    ax.axhline(exp["threshold_top1"], color=THRESHOLD, ls="--", lw=1, label=f"threshold {exp['threshold_top1']:.2f}%")
    chosen = next((r for r in rows if r.trial_id == best.get("trial_id")), None)
    if best.get("feasible") and chosen is not None:
        o = chosen.outcome
        ax.scatter([x(o)], [o.top1_judged], s=180, facecolors="none", edgecolors=THRESHOLD, lw=2, zorder=5)
        ax.annotate(
            f"best: {chosen.trial_id} ({o.speedup:.2f}× faster)",
            (x(o), o.top1_judged),
            textcoords="offset points",
            xytext=(10, -18),
            fontsize=9,
        )
    ax.set_xlabel(f"latency normalised to the baseline, ms (baseline p50 {reference_ms:.3f} ms / speed-up)")
    ax.set_ylabel("top-1 accuracy, % (lower of PyTorch and device)")
    ax.set_title(f"{exp['space']}: {exp['model']} on {exp['dataset']}, latency against accuracy")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _progress_figure(rows: list[TrialRow], path: Path) -> None:
    import matplotlib.pyplot as plt

    ordered = sorted(rows, key=lambda r: r.timestamp if finite(r.timestamp) else math.inf)
    n = range(1, len(ordered) + 1)
    best, curve = math.nan, []
    for r in ordered:
        if r.feasible:
            best = max(r.outcome.speedup, best) if math.isfinite(best) else r.outcome.speedup
        curve.append(best)
    fig, ax = plt.subplots(figsize=(7.5, 4))
    for feasible, color, marker, label in (
        (True, FEASIBLE, "o", "feasible trial"),
        (False, INFEASIBLE, "x", "infeasible trial"),
    ):
        pts = [(i, r) for i, r in zip(n, ordered, strict=True) if r.status == "ok" and r.feasible == feasible]
        ax.scatter([i for i, _ in pts], [r.outcome.speedup for _, r in pts], c=color, marker=marker, label=label)
    if any(math.isfinite(c) for c in curve):
        ax.step(list(n), curve, where="post", color=FEASIBLE, lw=2, label="best feasible so far")
    else:
        ax.text(0.5, 0.5, "no feasible trial", transform=ax.transAxes, ha="center", color=THRESHOLD)
    ax.axhline(1.0, color=BASELINE, lw=0.8, ls=":", label="baseline (1×)")
    stopped = sum(r.status != "ok" for r in rows)
    ax.set_xlabel("trial, in the order trials finished" + (f" ({stopped} stopped early or errored)" if stopped else ""))
    ax.set_ylabel("speed-up over the baseline, × (interleaved)")
    ax.set_title("Search progress")
    ax.set_xticks(list(n) if len(ordered) <= 20 else ax.get_xticks())
    ax.set_xlim(0.5, len(ordered) + 0.5)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _layers_figure(layers: list[LayerComparison], trial: str, path: Path, top: int = 12) -> None:
    import matplotlib.pyplot as plt
    import numpy as np

    shown = layers[:top][::-1]  # the slowest baseline layers, slowest at the top
    y = np.arange(len(shown))
    fig, ax = plt.subplots(figsize=(7.5, 0.35 * len(shown) + 1.5))
    ax.barh(y + 0.2, [r.baseline_ms for r in shown], 0.4, color=INFEASIBLE, label="baseline")
    ax.barh(y - 0.2, [r.best_ms for r in shown], 0.4, color=FEASIBLE, label=f"trial {trial}")
    ax.set_yticks(y, [f"{r.module} ({r.node_type})" for r in shown], fontsize=8)
    ax.set_xlabel("time per inference, ms (OpenVINO per-layer counters)")
    ax.set_title(f"Per-layer latency, the {len(shown)} slowest baseline layers")
    ax.grid(axis="x", alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _float(v: Any) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def _cell(key: str, v: Any) -> str:
    if isinstance(v, bool) or v is None or v == "":
        return "–" if v in (None, "") else ("yes" if v else "no")
    if key == "macs" and finite(v) and v:
        return f"{v / 1e6:.1f} M"
    if isinstance(v, float):
        return f"{v:.3f}" if math.isfinite(v) else "–"
    return html.escape(str(v))


def _table(rows: list[TrialRow]) -> str:
    """The trial table, best feasible first, as HTML; with several kinds, each kind's speed-up after the rest."""
    params = list(dict.fromkeys(k for r in rows for k in r.config))
    kinds = list(dict.fromkeys(k for r in rows for k in r.outcome.kinds))
    head = "".join(f"<th>{html.escape(label)}</th>" for _, label in TABLE_COLUMNS)
    head += "".join(f"<th>speed-up × {html.escape(k)}</th>" for k in kinds)
    head += "".join(f"<th>{html.escape(p)}</th>" for p in params) + "<th>error</th>"

    def value(r: TrialRow, key: str) -> Any:
        if key in ("trial_id", "status", "feasible"):
            return getattr(r, key)
        return getattr(r.outcome, key) if r.status == "ok" else None

    body = "\n".join(
        f"<tr class='{'feasible' if r.feasible else r.status}'>"
        + "".join(f"<td>{_cell(k, value(r, k))}</td>" for k, _ in TABLE_COLUMNS)
        + "".join(f"<td>{_cell('speedup', _float(r.outcome.kinds.get(k, {}).get('speedup')))}</td>" for k in kinds)
        + "".join(f"<td>{_cell(p, r.config.get(p))}</td>" for p in params)
        + f"<td>{html.escape(r.error)}</td></tr>"
        for r in rows
    )
    return f"<table><tr>{head}</tr>\n{body}\n</table>"


def _verdict(rows: list[TrialRow], best: dict[str, Any], reference_ms: float) -> str:
    chosen = next((r for r in rows if r.trial_id == best.get("trial_id")), None)
    if chosen is None:
        return "<b>No trial reached the threshold.</b> Try a lower threshold or more fine-tuning epochs."
    o, tid = chosen.outcome, html.escape(chosen.trial_id)
    if not best.get("feasible"):
        return (
            f"<b>No trial reached the threshold.</b> The closest was {tid}: top-1 {o.top1_judged:.2f}%"
            f"{describe_runs(chosen)} ({-chosen.shortfall:.2f} points short), {o.speedup:.3f}× faster. "
            "Try a lower threshold or more fine-tuning epochs."
        )
    measured = (
        f"<b>{o.speedup:.3f}×</b> (95% CI {o.speedup_ci_low:.3f}–{o.speedup_ci_high:.3f}, measured interleaved "
        f"with the baseline; {o.latency_ms_normalised(reference_ms):.3f} ms on the baseline's "
        f"{reference_ms:.3f} ms scale), top-1 {o.top1:.2f}% in PyTorch and {o.top1_device:.2f}% on the device"
        f"{describe_runs(chosen)}"
    )
    if not o.faster_than_baseline():
        return (
            f"<b>No feasible trial is measurably faster than the baseline.</b> The best, {tid}, measured {measured}: "
            "its confidence interval reaches 1×, so within the noise it is not faster. Its model is in "
            "<code>best/</code> all the same."
        )
    return f"Best feasible trial <b>{tid}</b>: {measured}; its model is in <code>best/</code>."


def _kinds_table(rows: list[TrialRow], best: dict[str, Any]) -> str:
    """--also-device: the chosen trial on every kind, each against its own baseline."""
    exp = best["experiment"]
    chosen = next((r for r in rows if r.trial_id == best.get("trial_id")), None)
    if not exp.get("kinds") or chosen is None or not chosen.outcome.kinds:
        return ""
    e = html.escape
    head = "".join(
        f"<th>{h}</th>"
        for h in (
            "kind",
            "speed-up ×",
            "95% CI",
            "own p50, ms",
            "baseline p50 in the same rounds, ms",
            "top-1 % device",
            "baseline p50 at the start, ms",
        )
    )
    body = []
    for kind, v in chosen.outcome.kinds.items():
        base = exp["kinds"].get(kind, {})
        cells = (
            e(kind),
            _cell("speedup", _float(v.get("speedup"))),
            f"{_float(v.get('speedup_ci_low')):.3f}–{_float(v.get('speedup_ci_high')):.3f}",
            _cell("latency_ms", _float(v.get("latency_ms"))),
            _cell("baseline_latency_ms", _float(v.get("baseline_latency_ms"))),
            _cell("top1_device", _float(v.get("top1_device"))),
            _cell("latency_ms", _float(base.get("latency_ms"))),
        )
        body.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    what = {
        "target": f"the target's speed-up ({e(exp['device'].get('device', ''))})",
        "worst": "the worst speed-up over the kinds",
        "geomean": "the geometric mean of the kinds' speed-ups",
    }.get(exp.get("speedup_of", "target"), "")
    return (
        f"<h2>On every device kind</h2><p>Trial {e(chosen.trial_id)} measured on each kind against that kind's own "
        f"baseline, interleaved on the same device. The search optimised {what}.</p>"
        f"<table><tr>{head}</tr>\n" + "\n".join(body) + "</table>"
    )


def write_report(experiment: Path) -> Path:
    """Write ``figures/*.png`` and ``report.html`` in ``experiment``; returns the HTML's path."""
    import matplotlib

    matplotlib.use("Agg")
    rows, reference, best, layers = _read(experiment)
    exp = best["experiment"]
    figures = experiment / "figures"
    figures.mkdir(exist_ok=True)
    _pareto_figure(rows, reference, best, figures / "pareto.png")
    _progress_figure(rows, figures / "progress.png")
    shown = [
        (
            "pareto.png",
            "Every finished trial's speed-up, as latency normalised to the baseline, against its top-1. "
            "Filled: at or above the threshold.",
        ),
        ("progress.png", "Each trial's speed-up in the order trials finished; the line is the best feasible so far."),
    ]
    if layers and best.get("trial_id"):
        _layers_figure(layers, best["trial_id"], figures / "layers.png")
        which = "the best feasible trial" if best.get("feasible") else "the trial closest to the threshold (infeasible)"
        shown.append(("layers.png", f"Where the time goes: {which}, {best['trial_id']}, against the baseline."))
    for table in sorted(experiment.glob("layers_*.csv")) if best.get("trial_id") else []:  # --also-device's
        kind = next((k for k in exp.get("kinds", {}) if f"layers_{kind_slug(k)}" == table.stem), table.stem)
        _layers_figure(read_comparison(table), best["trial_id"], figures / f"{table.stem}.png")
        shown.append((f"{table.stem}.png", f"Where the time goes on {kind}: {best['trial_id']}, against the baseline."))
    figs = "\n".join(
        f"<figure><img src='figures/{name}' alt='{html.escape(text)}'>"
        f"<figcaption>{html.escape(text)}</figcaption></figure>"
        for name, text in shown
    )
    e, base = html.escape, exp["baseline"]
    setup = (
        f"Space <b>{e(exp['space'])}</b>, model {e(exp['model'])} on {e(exp['dataset'])}; "
        f"searcher {e(str(exp.get('searcher', '')))}, {len(rows)} trials; "
        f"device {e(str(exp['device'].get('device', '')))} ({e(str(exp.get('precision', '')))}). "
        f"Baseline: top-1 {base['top1']:.2f}% (device {_float(base.get('top1_device')):.2f}%), "
        f"{base['latency_ms']:.3f} ms p50 (the reference of every normalised latency), "
        f"{base['macs'] / 1e6:.1f} M MACs. Threshold: top-1 ≥ {exp['threshold_top1']:.2f}%."
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
<p>{_verdict(rows, best, reference)}</p>
{_kinds_table(rows, best)}
{figs}
<h2>Trials</h2>
<p>Best feasible first. Top-1 is judged as the lower of PyTorch and device; speed-up is the baseline's latency over
the trial's, measured interleaved on the device. Each trial's own p50 was measured at its own time and is not
comparable across trials.</p>
{_table(rows)}
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
