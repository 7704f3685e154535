"""Benchmark 11: search wall time with one and two device actors when the device is the bottleneck.

    python benchmarks/device_pool.py [--trials 8] [--epochs 1]
    # writes docs/benchmarks/device_pool.md and device_pool.json

Two parts.

Real runs: ``python -m edge_tune.run --space filter_prune --searcher random
--epochs 1 --num-samples N --max-concurrent 2`` with ``--devices 1`` and
``--devices 2`` on this machine (the same seed, so the same candidates), with
the default timing plan and with timing that runs to its limit. One
fine-tuning epoch is as short as a trial gets, the case where trials might
wait for the device, which a second device is for. The search's
wall time is ``search_seconds`` of experiment.json (Ray and the baseline
excluded); each device's jobs come from the pool's counters. On a 2-core
machine two devices and two trials share two cores, so the gain measured here
is a floor.

Simulation: the service times of one trial, measured in this process on the
same candidates (fine-tune seconds with one thread; the device's benchmark and
evaluation seconds, default timing), with a trial's other time on its worker
fitted to the two-device run, drive a discrete-event model of the search: W
trial workers, K devices of one kind serving one FIFO queue; a trial sends its
planned network to the device as it starts fine-tuning, sends its final model
for evaluation when fine-tuning ends, and ends when both are done (as
``edge_tune.trial`` does). Nothing competes for CPUs in the model: it is the
cluster case, trials on their own workers and each device on its own host. The
model is checked against the real runs, then asked about 1 to 8 devices, for
this device and for devices 4 and 16 times slower on this network.

    python benchmarks/device_pool.py --model-only   # the model again, from device_pool.json
"""

from __future__ import annotations

import argparse
import heapq
import json
import random
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
OUT = REPO / "docs" / "benchmarks"
SPACE = "filter_prune"


TIMINGS = {  # the device's timing plan: the default, and timing that runs to its limit (8 s or 200 rounds)
    "default": [],
    "to the cap": ["--target-ci", "0.1", "--time-cap", "8"],
}


def real_run(devices: int, trials: int, epochs: int, out: Path, timing: str) -> dict[str, Any]:
    """One edge_tune.run with ``devices`` devices; its search seconds and each device's jobs."""
    name = f"pool{devices}-{timing.replace(' ', '-')}"
    argv = [
        sys.executable, "-m", "edge_tune.run", "--space", SPACE, "--searcher", "random", "--seed", "0",
        "--epochs", str(epochs), "--num-samples", str(trials), "--max-concurrent", "2", "--devices", str(devices),
        "--truncate-lr", "--wandb", "off", "--quiet", "--accuracy-threshold", "0", "--output-dir", str(out),
        "--name", name,
        *TIMINGS[timing],
    ]  # fmt: skip
    started = time.perf_counter()
    proc = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=3600)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-3000:])
    experiment = json.loads((out / name / "experiment.json").read_text())
    stats = experiment["device_stats"]
    return {
        "timing": timing,
        "devices": devices,
        "trials": trials,
        "search_s": experiment["search_seconds"],
        "run_s": time.perf_counter() - started,
        "jobs": (stats.get("pool") or {}).get("jobs") or {"edge_device": stats["benchmarks"] + stats["evaluations"]},
        "cache_hits": stats.get("cache_hits"),
    }


def service_times(trials: int, epochs: int) -> list[dict[str, float]]:
    """Per candidate of the random search's kind: fine-tune, benchmark and evaluation seconds, one thread."""
    import torch

    from edge_tune.baseline import load_or_train_baseline
    from edge_tune.compression import CompressionScheduler, parse_schedule
    from edge_tune.config import DEFAULT_CACHE
    from edge_tune.data import Chunks, load_dataset
    from edge_tune.device import DeviceConfig, DeviceRunner, TimingPlan
    from edge_tune.space import find_space
    from edge_tune.train import TrainConfig, fine_tune, make_optimizer
    from edge_tune.trial import verify_and_export

    torch.set_num_threads(1)
    data = load_dataset("digits")
    torch.manual_seed(0)
    baseline = load_or_train_baseline("resnet20", data, TrainConfig(), DEFAULT_CACHE, print)
    space = find_space(SPACE)
    example = torch.zeros(1, *data.input_shape)
    base = baseline.build(data.num_classes, data.in_channels)
    plans = {"default": TimingPlan(), "to the cap": TimingPlan(target_ci=0.001, time_cap_s=8.0)}
    runners = {
        t: DeviceRunner(DeviceConfig(cache=False, timing=plan), verify_and_export(base, example), Chunks(data.val))
        for t, plan in plans.items()
    }
    rng = random.Random(0)
    times = []
    for _ in range(trials):
        config = {p: rng.uniform(param.low, param.high) for p, param in space.params.items()}
        doc, finetune = space.render(config)
        cfg = replace(TrainConfig(epochs=3, lr=0.01), **{**finetune, "epochs": epochs})
        model = baseline.build(data.num_classes, data.in_channels)
        compression = CompressionScheduler(model, parse_schedule(doc), example, lambda m, c=cfg: make_optimizer(m, c))
        planned, _ = compression.planned_model()
        bench = {}
        for t, runner in runners.items():
            started = time.perf_counter()
            runner.benchmark(verify_and_export(planned, example))
            bench[f"benchmark_{t}"] = time.perf_counter() - started
        started = time.perf_counter()
        fine_tune(
            model, data, cfg, on_epoch_start=compression.on_epoch_start,
            on_epoch_end=lambda e, *_, c=compression: c.on_epoch_end(e),
        )  # fmt: skip
        compression.finish()
        train = time.perf_counter() - started
        started = time.perf_counter()
        runners["default"].evaluate(verify_and_export(model, example))
        times.append({"finetune_s": train, "evaluate_s": time.perf_counter() - started, **bench})
        print(f"  service times: {times[-1]}", flush=True)
    for runner in runners.values():
        runner.close()
    return times


def simulate(
    times: list[dict[str, float]], workers: int, devices: int, trials: int, overhead: float = 0.0, scale: float = 1.0
) -> float:
    """Wall seconds of ``trials`` trials on ``workers`` workers and ``devices`` devices (the module's model).
    Trial i has the service times of ``times[i % len(times)]``: ``overhead`` seconds on its worker first (Ray's
    worker, data, export), then its benchmark is queued while it fine-tunes, then its evaluation; device jobs
    take ``scale`` times their measured seconds."""
    events: list[tuple[float, int, str, int]] = []  # (time, order, what, trial)
    order = 0
    queue: list[tuple[int, str]] = []  # device jobs waiting, first come first served: (trial, job)
    free_devices, free_workers = devices, workers
    waiting = dict.fromkeys(range(trials), 2)  # device jobs each trial still waits for
    trained: set[int] = set()
    next_trial, clock, finished = 0, 0.0, 0

    def push(t: float, what: str, i: int) -> None:
        nonlocal order
        order += 1
        heapq.heappush(events, (t, order, what, i))

    def start_jobs(now: float) -> None:
        nonlocal free_devices
        while free_devices and queue:
            i, job = queue.pop(0)
            free_devices -= 1
            push(now + scale * times[i % len(times)][f"{job}_s"], "device", i)

    while True:
        while free_workers and next_trial < trials:
            free_workers -= 1
            push(clock + overhead, "ready", next_trial)
            next_trial += 1
        start_jobs(clock)
        if not events:
            break
        clock, _, what, i = heapq.heappop(events)
        if what == "ready":
            queue.append((i, "benchmark"))
            push(clock + times[i % len(times)]["finetune_s"], "trained", i)
        elif what == "trained":
            trained.add(i)
            queue.append((i, "evaluate"))
        else:
            free_devices += 1
            waiting[i] -= 1
        if i in trained and waiting[i] == 0:
            finished, free_workers, waiting[i] = finished + 1, free_workers + 1, -1
    assert finished == trials
    return clock


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=8)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--model-only", action="store_true", help="only the model, from device_pool.json's measurements")
    args = ap.parse_args()
    if args.model_only:
        result = json.loads((OUT / "device_pool.json").read_text())
        model(result)
        (OUT / "device_pool.json").write_text(json.dumps(result, indent=1))
        (OUT / "device_pool.md").write_text(report(result))
        print(report(result))
        return
    result: dict[str, Any] = {"trials": args.trials, "epochs": args.epochs, "space": SPACE, "real": []}
    with tempfile.TemporaryDirectory() as tmp:
        for timing in TIMINGS:
            for devices in (1, 2):
                print(f"real run, --devices {devices}, timing {timing}", flush=True)
                result["real"].append(real_run(devices, args.trials, args.epochs, Path(tmp), timing))
                print(f"  {result['real'][-1]}", flush=True)
    times = service_times(args.trials, args.epochs)
    result["service_times"] = times
    model(result)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "device_pool.json").write_text(json.dumps(result, indent=1))
    (OUT / "device_pool.md").write_text(report(result))
    print(report(result))


SCALES = (1, 4, 16)  # device jobs as measured here, and on a device 4 and 16 times slower for this network
WORKERS = 8  # trial workers of the modelled cluster
DEVICES = (1, 2, 4, 8)
MODEL_TRIALS = 64


def model(result: dict[str, Any]) -> None:
    """The model's inputs from the measurements, its check against the real runs, and its predictions."""
    times = [{**t, "benchmark_s": t["benchmark_default"]} for t in result["service_times"]]
    med = {k: statistics.median(t[k] for t in times) for k in times[0]}
    result["service_median_s"] = med
    real = {(x["timing"], x["devices"]): x["search_s"] for x in result["real"]}
    n, w = result["trials"], 2
    # A trial's own time besides fine-tuning on this machine (Ray's worker, data, export, checkpoint), fitted
    # to the default-timing run with two devices, where a trial hardly waits for a device.
    overhead = real[("default", 2)] * w / n - med["finetune_s"] - med["evaluate_s"]
    result["overhead_s"] = overhead
    result["model_real"] = {str(d): simulate(times, w, d, n, overhead) for d in (1, 2)}
    result["model"] = {
        str(scale): {str(d): simulate(times, WORKERS, d, MODEL_TRIALS, overhead, scale) for d in DEVICES}
        for scale in SCALES
    }


def report(r: dict[str, Any]) -> str:
    med = r["service_median_s"]
    lines = [
        "# Search wall time with one and two devices",
        "",
        f"`python benchmarks/device_pool.py --trials {r['trials']} --epochs {r['epochs']}` (see its docstring). "
        f"`{r['space']}`, random search, {r['epochs']} fine-tuning epoch a trial, 2 trials at a time, two timing "
        "plans: the default (stop at a 2 % interval or 20 s) and timing that runs to its limit "
        "(`--target-ci 0.1 --time-cap 8`: an interval no run reaches, so 8 s or 200 rounds, whichever comes first). "
        "Raw: `device_pool.json`.",
        "",
        "## Real runs on this 2-core machine",
        "",
        "| timing | devices | search wall, s | jobs per device | gain over one device |",
        "| --- | --- | --- | --- | --- |",
    ]
    one = {x["timing"]: x["search_s"] for x in r["real"] if x["devices"] == 1}
    for x in r["real"]:
        jobs = ", ".join(f"{k}: {v}" for k, v in x["jobs"].items())
        gain = one[x["timing"]] / x["search_s"]
        lines.append(f"| {x['timing']} | {x['devices']} | {x['search_s']:.0f} | {jobs} | {gain:.2f}x |")
    med, overhead = r["service_median_s"], r["overhead_s"]
    device_s = med["benchmark_s"] + med["evaluate_s"]
    lines += [
        "",
        "Two devices share the jobs evenly and gain nothing here: the device is not what trials wait for. A trial "
        f"spends about {r['real'][1]['search_s'] * 2 / r['trials']:.0f} s on its worker and about {device_s:.1f} s "
        "on the device, and on two cores the second device's timing competes with the trials for the same CPUs.",
        "",
        "## The model",
        "",
        f"Service times, median over {len(r['service_times'])} candidates measured in one process with one thread: "
        f"fine-tune {med['finetune_s']:.1f} s, benchmark {med['benchmark_s']:.1f} s, evaluation "
        f"{med['evaluate_s']:.1f} s. A trial's time besides fine-tuning (Ray's worker, data, export, checkpoint), "
        f"fitted to the two-device default run: {overhead:.1f} s. The model of the real runs, 2 workers: "
        + ", ".join(f"{d} device(s) {v:.0f} s" for d, v in r["model_real"].items())
        + f" (measured {r['real'][0]['search_s']:.0f} and {r['real'][1]['search_s']:.0f} s; the second is what the "
        "overhead was fitted to, the first a check).",
        "",
        f"Predicted wall seconds of {MODEL_TRIALS} trials on {WORKERS} trial workers (a cluster: trials on their own "
        "machines, each device on its own host), rows the device's speed for this network, columns K devices:",
        "",
        "| device jobs | " + " | ".join(f"K = {d}" for d in DEVICES) + f" | K = {DEVICES[-1]} against 1 |",
        "| --- | " + " | ".join("---" for _ in DEVICES) + " | --- |",
    ]
    for scale, row in r["model"].items():
        values = list(row.values())
        what = "as measured here" if scale == "1" else f"{scale}x slower"
        lines.append(
            f"| {what} ({float(scale) * device_s:.1f} s a trial) | "
            + " | ".join(f"{v:.0f}" for v in values)
            + f" | {values[0] / values[-1]:.2f}x |"
        )
    lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
