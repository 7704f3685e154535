"""The end of a search: every output written, the table, the Pareto front and the verdict printed; the exit code."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from edge_tune.layers import format_layers
from edge_tune.objective import Objective
from edge_tune.outcome import TrialRow
from edge_tune.progress import log
from edge_tune.report import write_report
from edge_tune.results import (
    closest_infeasible,
    describe_runs,
    format_front,
    format_table,
    pareto_front,
    rank,
    write_outputs,
)
from edge_tune.tracking import log_summary

__all__ = ["EXIT_NO_FEASIBLE", "EXIT_OK", "finish", "verdict"]

EXIT_OK, EXIT_NO_FEASIBLE = 0, 3  # an interrupted run exits with 128 + the signal (signals.py)


def finish(
    out_dir: Path,
    rows: list[TrialRow],
    experiment: dict[str, Any],
    device: Any,
    objective: Objective,
    params: list[str],
    wandb: tuple[str, str] = ("", "off"),
) -> int:
    """Write and print the results; the exit code says whether any trial was feasible."""
    import ray

    stats = ray.get(device.info.remote())
    experiment["device_stats"] = stats
    best, layers = write_outputs(out_dir, rows, params, experiment, ray.get(device.baseline_layers.remote()))
    print(format_table(rank(rows), params))
    log(
        f"device: {stats['name']} on OpenVINO {stats['runtime'].split('-')[0]} (Python {stats['python']}): "
        f"{stats['benchmarks']:.0f} benchmarks, {stats['evaluations']:.0f} evaluations, "
        f"{stats['cache_hits']:.0f} cache hits, busy {100 * stats['busy_fraction']:.0f}% of the time"
    )
    if layers:
        print("per-layer latency (OpenVINO counters), best trial against the baseline, slowest first:")
        print(format_layers(layers))
    log(f"wall time {experiment['wall_seconds']:.0f}s; results in {out_dir}")
    (out_dir / "experiment.json").write_text(json.dumps(experiment, indent=2, default=str))
    log(f"report: {write_report(out_dir)}")
    project, mode = wandb
    if mode != "off":
        where = log_summary(out_dir, project, out_dir.name, mode, experiment, best)
        sync = f"; upload with: wandb sync {out_dir}/wandb/offline-run-* {out_dir}/*/wandb/offline-run-*"
        log(f"W&B ({mode}, project {project}): summary run in {where}" + (sync if mode == "offline" else ""))
    front = pareto_front(rows)
    if front:
        print(format_front(front, experiment["baseline"]["latency_ms"]))
    confirming = bool((experiment.get("confirm") or {}).get("fine_tunes"))
    return verdict(rows, best, objective, experiment["baseline"]["macs"], confirming)


def _unconfirmed(rows: list[TrialRow], best: TrialRow) -> str:
    """Why the pick rests on one fine-tune although confirmation was on."""
    failed = sorted({r.outcome.speedup for r in rows if r.held is False}, reverse=True)
    why = (
        f"the confirmation fine-tunes went to {len(failed)} faster candidate(s) "
        f"({', '.join(f'{v:.3f}x' for v in failed)}) whose mean top-1 did not hold"
        if failed
        else "no confirmation fine-tune was left for it"
    )
    return f" [one fine-tune, not confirmed: {why}; raise --confirm to confirm further]"


def verdict(
    rows: list[TrialRow], best: TrialRow | None, objective: Objective, base_macs: int, confirming: bool = False
) -> int:
    """The last line: the best feasible trial, or why there is none; and the exit code. ``confirming``:
    a pick that rests on one fine-tune says so."""
    if best is None:
        closest = closest_infeasible(rows)
        detail = (
            f"; the closest was {closest.trial_id} at top1 {closest.outcome.top1_judged:.2f}%{describe_runs(closest)} "
            f"({-closest.shortfall:.2f} points short, speedup {closest.outcome.speedup:.3f}x), "
            "kept in best.json marked infeasible; try a lower threshold or more fine-tuning epochs"
            if closest is not None
            else ""
        )
        log(f"no trial of {len(rows)} reached the threshold of {objective.threshold:.2f}% top-1{detail}")
        return EXIT_NO_FEASIBLE
    o = best.outcome
    measured = (
        f"speedup {o.speedup:.3f}x (95% CI {o.speedup_ci_low:.3f}-{o.speedup_ci_high:.3f}, cv {o.speedup_cv:.3f}), "
        f"top1 {o.top1:.2f}% (device {o.top1_device:.2f}%){describe_runs(best)}, {o.macs:,} MACs vs {base_macs:,}"
    )
    if not o.faster_than_baseline():
        log(
            f"no feasible trial is measurably faster than the baseline: the best, {best.trial_id}, measured "
            f"{measured}; its 95% CI reaches down to 1.0x or below, so within the measurement's noise it is not "
            "faster (best/ holds it all the same)"
        )
        return EXIT_OK
    log(
        f"best feasible: {best.trial_id} {measured}"
        + (_unconfirmed(rows, best) if confirming and not best.runs else "")
    )
    if o.kinds:  # --also-device: the speed-up above is --speedup-of's; each kind's own
        log(
            "  on each kind: "
            + "; ".join(
                f"{kind} {v['speedup']:.3f}x ({v['latency_ms']:.3f} ms against {v['baseline_latency_ms']:.3f} ms, "
                f"top1 {v['top1_device']:.2f}%)"
                for kind, v in o.kinds.items()
            )
        )
    return EXIT_OK
