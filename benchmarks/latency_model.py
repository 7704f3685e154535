"""How well the latency model predicts the device: 50 random candidates of every shipped space.

    python benchmarks/latency_model.py [--candidates 50] [--levels 64] [--builds 2]
    # writes docs/benchmarks/latency_model.md and .json (--out names them)
    python benchmarks/latency_model.py --compare A.json B.json
    # two runs' measurements of the same candidates: the device's reproducibility

For each network the shipped spaces prune (ResNet-20, ResNet-56, MobileNetV2;
digits input, 1x32x32), ``LatencyModel.build`` measures its tables on the
OpenVINO CPU device (1 thread, f32) in both designs (uniform and shuffled, so
the context term is fitted), and its wall time is reported; ``--builds`` (2)
times over, each build on its own runner, every build judged against the
same measurements: how far two builds of the same tables differ. Then, for
every shipped space of that network, ``--candidates`` random points of the
space are pruned at once to the schedule's final architecture (no training:
latency does not depend on the weights), and each candidate's predicted
speed-up is set against the one the device measures, interleaved with the
baseline as a trial's is (``DeviceRunner.benchmark``, the default timing plan,
no cache). Reported per space: the median and 90th percentile of the absolute
relative error, its largest, the Spearman correlation of prediction and
measurement, and how many candidates the tables do not cover (an INT8 model's
kernels are not the f32 tables'). The first build's measurements also predict
without the context term (beta 0), to show what it buys.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

from edge_tune.compression import apply_pruners, parse_schedule
from edge_tune.device import DeviceConfig, DeviceRunner, TimingPlan
from edge_tune.export import to_onnx
from edge_tune.latency_model import LatencyModel, on_device, within_cell
from edge_tune.models import create_model
from edge_tune.space import find_space, space_names

OUT = Path(__file__).resolve().parent.parent / "docs" / "benchmarks"
EXAMPLE = torch.zeros(1, 1, 32, 32)
# The build only needs the profiles: the timing before each is cut to its minimum.
BUILD = DeviceConfig(
    timing=TimingPlan(warmup=5, iters_per_round=10, min_rounds=5, max_rounds=5),  # to fit the constant
    cache=False,
    profile_repeats=3,
    profile_inferences=30,
)


def spearman(a: list[float], b: list[float]) -> float:
    def ranks(v: list[float]) -> list[float]:
        order = sorted(range(len(v)), key=lambda i: v[i])
        r = [0.0] * len(v)
        i = 0
        while i < len(order):
            j = i
            while j + 1 < len(order) and v[order[j + 1]] == v[order[i]]:
                j += 1
            for k in range(i, j + 1):
                r[order[k]] = (i + j) / 2
            i = j + 1
        return r

    ra, rb = ranks(a), ranks(b)
    ma, mb = statistics.fmean(ra), statistics.fmean(rb)
    cov = sum((x - ma) * (y - mb) for x, y in zip(ra, rb, strict=True))
    var = (sum((x - ma) ** 2 for x in ra) * sum((y - mb) ** 2 for y in rb)) ** 0.5
    return cov / var if var else float("nan")


def candidates(space: Any, model: torch.nn.Module, n: int, seed: int) -> list[tuple[dict[str, Any], Any, bool]]:
    """``n`` random points of ``space``: (config, the pruned network, whether the schedule quantizes)."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        config = {
            p.name: rng.uniform(p.low, p.high) if p.type == "float" else rng.choice(p.values or (int(p.low),))
            for p in space.params.values()
        }
        schedule = parse_schedule(space.render(config)[0])
        pruned = copy.deepcopy(model)
        apply_pruners(pruned, schedule.structured_final(), EXAMPLE)
        out.append((config, pruned, schedule.quantizer is not None))
    return out


def run_model(
    model_name: str, spaces: list[str], n: int, levels: int, builds: int, designs: tuple[str, ...]
) -> dict[str, Any]:
    torch.manual_seed(0)
    model = create_model(model_name, num_classes=10, in_channels=1).eval()
    base_onnx = to_onnx(model, EXAMPLE)
    lms = []
    for b in range(builds):  # the same tables built again, each on its own runner: how far two builds differ
        builder = DeviceRunner(BUILD, base_onnx)
        try:
            bench = on_device(builder, EXAMPLE)
            lms.append(LatencyModel.build(model, EXAMPLE, bench, levels=levels, log=print, designs=designs))
        finally:
            builder.close()
        print(f"{model_name}: build {b + 1} in {lms[-1].build_s:.0f} s, context term beta {lms[-1].context_beta:.3f}")
    lm = lms[0]
    runner = DeviceRunner(DeviceConfig(cache=False), base_onnx)
    results = []
    try:
        for name in spaces:
            rows = []
            for i, (config, pruned, int8) in enumerate(candidates(find_space(name), model, n, seed=len(results))):
                predicted = None if int8 else lm.predict(pruned)
                raw = None if int8 else lm.predict(pruned, overhead_ms=lm.profiled_overhead_ms)
                flat = None if int8 else lm.predict(pruned, context=False)
                others = [] if int8 else [m.predict(pruned) for m in lms[1:]]
                if predicted is None:
                    rows.append({"config": config, "predicted": None, "measured": None})
                    continue
                start = time.perf_counter()
                measured = runner.benchmark(to_onnx(pruned, EXAMPLE), profile=False)
                rows.append(
                    {
                        "config": config,
                        "predicted": predicted,
                        "measured": measured.speedup,
                        "ci": [measured.speedup_ci_low, measured.speedup_ci_high],
                        "error": predicted / measured.speedup - 1,
                        "predicted_profiled_overhead": raw,
                        "error_profiled_overhead": (raw or 0.0) / measured.speedup - 1,
                        "predicted_no_context": flat,
                        "error_no_context": (flat or 0.0) / measured.speedup - 1,
                        "context": lm.context(pruned),
                        "predicted_rebuilds": others,
                        "error_rebuilds": [(p or 0.0) / measured.speedup - 1 for p in others],
                        "seconds": time.perf_counter() - start,
                    }
                )
                print(f"{name} {i}: predicted {predicted:.3f}x measured {measured.speedup:.3f}x")
            results.append({"space": name, "rows": rows})
    finally:
        runner.close()
    return {
        "model": model_name,
        "build_s": lm.build_s,
        "builds": [{"build_s": m.build_s, "context_beta": m.context_beta} for m in lms],
        "context_profile": context_profile(lm),
        "levels": lm.levels,
        "overhead_ms": lm.overhead_ms,
        "profiled_overhead_ms": lm.profiled_overhead_ms,
        "baseline_ms": lm.baseline_ms,
        "context_beta": lm.context_beta,
        "designs": list(lm.designs),
        "spaces": results,
    }


def context_profile(lm: LatencyModel) -> dict[str, float]:
    """How a group's time moves with its copy's context, the width held: for every (group, width) measured
    more than once, each ratio's log over the width's mean log, averaged per context (to 0.1). A flat
    profile is no context effect; its slope is what the context term fits."""
    bins: dict[float, list[float]] = {}
    for t in lm.groups.values():
        for width, ratios in t.points.items():
            for c, _, dy in within_cell(list(zip(t.contexts.get(width, []), ratios, strict=False))):
                bins.setdefault(round(c, 1), []).append(dy)
    return {f"{c:.1f}": statistics.fmean(v) for c, v in sorted(bins.items())}


def summarise(space: dict[str, Any]) -> dict[str, Any]:
    rows = [r for r in space["rows"] if r["predicted"] is not None]
    errors = sorted(abs(r["error"]) for r in rows)
    out: dict[str, Any] = {"space": space["space"], "candidates": len(space["rows"]), "covered": len(rows)}
    if rows:
        out |= {
            "median_abs_error": statistics.median(errors),
            "median_signed_error": statistics.median(r["error"] for r in rows),
            "median_abs_error_profiled_overhead": statistics.median(abs(r["error_profiled_overhead"]) for r in rows),
            "median_abs_error_no_context": statistics.median(abs(r["error_no_context"]) for r in rows),
            "median_abs_error_rebuilds": [
                statistics.median(abs(r["error_rebuilds"][b]) for r in rows)
                for b in range(min(len(r.get("error_rebuilds", [])) for r in rows))
            ],
            "p90_abs_error": errors[int(0.9 * (len(errors) - 1))],
            "max_abs_error": errors[-1],
            "spearman": spearman([r["predicted"] for r in rows], [r["measured"] for r in rows]),
            "measured_range": [min(r["measured"] for r in rows), max(r["measured"] for r in rows)],
            "measured_ci_halfwidth_median": statistics.median(
                (r["ci"][1] - r["ci"][0]) / 2 / r["measured"] for r in rows
            ),
        }
    return out


def compare(ours: dict[str, Any], theirs: dict[str, Any]) -> str:
    """The same candidates (same seeds) measured by two runs of this benchmark: per space, the median of
    each candidate's speed-up in ``ours`` over its speed-up in ``theirs``, and the median absolute
    difference. It is the device's reproducibility from one run to the next, a floor under any model's
    error; each run's own CIs are within the run."""
    lines = [
        "| space | network | candidates in both | median shift | median abs. difference | baselines (ms) |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for run in ours["runs"]:
        other = next((r for r in theirs["runs"] if r["model"] == run["model"]), None)
        if other is None:
            continue
        for sp in run["spaces"]:
            osp = next((o for o in other["spaces"] if o["space"] == sp["space"]), None)
            pairs = [
                (a["measured"], b["measured"])
                for a, b in zip(sp["rows"], osp["rows"] if osp else [], strict=False)
                if a["measured"] and b["measured"] and a["config"] == b["config"]
            ]
            if pairs:
                d = [a / b - 1 for a, b in pairs]
                lines.append(
                    f"| `{sp['space']}` | {run['model']} | {len(pairs)} | {100 * statistics.median(d):+.1f} % | "
                    f"{100 * statistics.median(abs(x) for x in d):.1f} % | "
                    f"{run['baseline_ms']:.3f} / {other['baseline_ms']:.3f} |"
                )
    return "\n".join(lines)


def _each(run: dict[str, Any], key: str, fmt: str) -> str:
    """One figure of every build, a run without ``builds`` (one build) included."""
    builds = run.get("builds") or [{key: run.get(key, 0.0)}]
    return " / ".join(fmt.format(b[key]) for b in builds)


def render(
    device: str, runs: list[dict[str, Any]], n: int, seconds: float, name: str = "latency_model", command: str = ""
) -> str:
    lines = [
        "# The latency model against the device",
        "",
        f"`{command or 'python benchmarks/latency_model.py'}` on {device}, OpenVINO CPU, f32, 1 thread, digits input "
        f"(1x32x32), {seconds / 60:.0f} min. {n} random candidates of each shipped space, each pruned at once to "
        "its schedule's final architecture; the prediction from the tables against the speed-up the device "
        "measures for it, interleaved with the baseline (default timing plan, no cache). Raw figures: "
        "`latency_model.json`.",
        "",
        "| network | tables built in (each build) | copies | context term beta (each build) | "
        "constant fitted beside the layers | what the profiles leave outside them |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    lines += [
        f"| {r['model']} | {_each(r, 'build_s', '{:.0f} s')} | "
        f"{(r['levels'] - 1) * len(r['designs'])} ({' and '.join(r['designs'])}) | "
        f"{_each(r, 'context_beta', '{:.3f}')} | {r['overhead_ms']:.3f} ms of "
        f"{r['baseline_ms']:.3f} | {r['profiled_overhead_ms']:.3f} ms |"
        for r in runs
    ]
    lines += [
        "",
        "| space | network | covered | median abs. error | 90th pct. | largest | median signed | Spearman | "
        "speed-ups measured | their CI half-width (median) | median abs. error, constant from the profiles | "
        "median abs. error, no context term | median abs. error, the other builds |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in runs:
        for s in (summarise(sp) for sp in r["spaces"]):
            if s["covered"]:
                lo, hi = s["measured_range"]
                lines.append(
                    f"| `{s['space']}` | {r['model']} | {s['covered']}/{s['candidates']} | "
                    f"{100 * s['median_abs_error']:.1f} % | {100 * s['p90_abs_error']:.1f} % | "
                    f"{100 * s['max_abs_error']:.1f} % | {100 * s['median_signed_error']:+.1f} % | "
                    f"{s['spearman']:.3f} | {lo:.2f}-{hi:.2f}x | {100 * s['measured_ci_halfwidth_median']:.1f} % | "
                    f"{100 * s['median_abs_error_profiled_overhead']:.1f} % | "
                    f"{100 * s['median_abs_error_no_context']:.1f} % | "
                    f"{' / '.join(f'{100 * e:.1f} %' for e in s['median_abs_error_rebuilds']) or '-'} |"
                )
            else:
                lines.append(
                    f"| `{s['space']}` | {r['model']} | 0/{s['candidates']} | - | - | - | - | - | - | - | - | - | - |"
                )
    profiles = [r for r in runs if len(r.get("context_profile", {})) > 1]
    if profiles:
        keys = sorted({k for r in profiles for k in r["context_profile"]}, key=float)
        lines += [
            "",
            "A group's time against its copy's context, the width held (first build): per context, the mean of "
            "each ratio's log over its width's mean log, as a percentage (`context_profile`).",
            "",
            "| network | " + " | ".join(keys) + " |",
            "| --- | " + " | ".join("---" for _ in keys) + " |",
        ]
        for r in profiles:
            cells = [r["context_profile"].get(k) for k in keys]
            lines.append(
                f"| {r['model']} | "
                + " | ".join("-" if v is None else f"{100 * (math.exp(v) - 1):+.1f} %" for v in cells)
                + " |"
            )
    reading = OUT / f"{name}_reading.md"  # written by hand from the tables above; kept when they are rewritten
    if reading.exists():
        lines += ["", reading.read_text().rstrip()]
    lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--candidates", type=int, default=50)
    parser.add_argument("--levels", type=int, default=64)
    parser.add_argument("--models", default="resnet20,resnet56,mobilenetv2")
    parser.add_argument("--builds", type=int, default=2, help="builds of each network's tables, each judged")
    parser.add_argument("--designs", default="uniform,shuffled", help="the build's designs (one: no context term)")
    parser.add_argument("--out", default="latency_model", help="the results' name under docs/benchmarks/")
    parser.add_argument("--compare", nargs=2, metavar=("OURS", "THEIRS"), help="only: two runs' measurements")
    args = parser.parse_args()
    if args.compare:
        print(compare(*(json.loads(Path(f).read_text()) for f in args.compare)))
        return
    start = time.perf_counter()
    command = " ".join(["python benchmarks/latency_model.py", *sys.argv[1:]])
    by_model: dict[str, list[str]] = {}
    for name in space_names():
        by_model.setdefault(find_space(name).model, []).append(name)
    probe = DeviceRunner(DeviceConfig())
    device = probe.info()["name"]
    probe.close()
    runs: list[dict[str, Any]] = []
    for m in args.models.split(","):
        if not by_model.get(m):
            continue
        runs.append(
            run_model(m, by_model[m], args.candidates, args.levels, args.builds, tuple(args.designs.split(",")))
        )
        seconds = time.perf_counter() - start
        OUT.mkdir(parents=True, exist_ok=True)  # written after each network: a long run keeps what it finished
        summary = [{"model": r["model"], **summarise(s)} for r in runs for s in r["spaces"]]
        doc = {"device": device, "candidates": args.candidates, "summary": summary, "runs": runs, "command": command}
        (OUT / f"{args.out}.json").write_text(json.dumps(doc, indent=2, default=str))
        (OUT / f"{args.out}.md").write_text(render(device, runs, args.candidates, seconds, args.out, command))
    print(render(device, runs, args.candidates, time.perf_counter() - start, args.out, command))


if __name__ == "__main__":
    main()
