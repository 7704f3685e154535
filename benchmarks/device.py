"""Device benchmarks: stability, agreement with benchmark_app, contention.

    python benchmarks/device.py            # writes docs/benchmarks/device.md and .json

1. Stability: one pruned model measured 20 times -> CV of its p50 latency and
   of its speed-up against the baseline.
2. Agreement: our p50 against OpenVINO's ``benchmark_app -hint latency`` with
   the same thread count, precision and IR, for the baseline and 3 pruned models.
3. Contention: the speed-up measured on an idle machine and while a trial
   trains beside the device (a training process on the other core).
"""

from __future__ import annotations

import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from edge_tune.compression import PrunerSpec, apply_pruners
from edge_tune.device import DeviceConfig, DeviceRunner
from edge_tune.export import to_onnx
from edge_tune.models import create_model

OUT = Path(__file__).resolve().parent.parent / "docs" / "benchmarks"
EXAMPLE = torch.zeros(1, 1, 32, 32)
TRAINER = """
import torch, time
from edge_tune.data import load_dataset
from edge_tune.models import create_model
from edge_tune.train import TrainConfig, train_epoch, make_optimizer
torch.set_num_threads(1)
d = load_dataset("digits"); m = create_model("resnet20", num_classes=10, in_channels=1)
cfg = TrainConfig(); opt = make_optimizer(m, cfg); gen = torch.Generator().manual_seed(0)
end = time.time() + float(__import__("sys").argv[1])
while time.time() < end:
    train_epoch(m, opt, d, cfg, gen)
"""


def model_onnx(ratio: float) -> bytes:
    torch.manual_seed(0)
    model = create_model("resnet20", num_classes=10, in_channels=1).eval()
    if ratio > 0:
        spec = PrunerSpec("p", "L1RankedStructureParameterPruner", "Filters", ratio, (r"layer\d\.\d\.conv1",))
        apply_pruners(model, [spec], EXAMPLE)
    return to_onnx(model, EXAMPLE)


def cv(values: list[float]) -> float:
    return statistics.pstdev(values) / statistics.fmean(values)


def stability(runner: DeviceRunner, candidate: bytes, n: int = 20) -> dict:
    results = [runner.benchmark(candidate) for _ in range(n)]
    p50 = [r.latency_ms_p50 for r in results]
    speedup = [r.speedup for r in results]
    return {
        "repeats": n,
        "latency_ms_p50_mean": statistics.fmean(p50),
        "latency_cv": cv(p50),
        "speedup_mean": statistics.fmean(speedup),
        "speedup_cv": cv(speedup),
        "rounds_mean": statistics.fmean(r.rounds for r in results),
        "converged": sum(r.converged for r in results),
    }


def benchmark_app_p50(onnx_bytes: bytes, api: str, seconds: int = 10) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp, "m.onnx")
        path.write_bytes(onnx_bytes)
        out = subprocess.run(
            [
                "benchmark_app",
                "-m",
                str(path),
                "-d",
                "CPU",
                "-hint",
                "none",
                "-nstreams",
                "1",
                "-nthreads",
                "1",
                "-infer_precision",
                "f32",
                "-t",
                str(seconds),
                "-shape",
                "[1,1,32,32]",
                "-api",
                api,
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    match = re.search(r"Median:\s+([\d.]+)\s*(ms|us)", out)
    if match is None:
        raise RuntimeError(f"no median latency in benchmark_app's output:\n{out[-2000:]}")
    return float(match.group(1)) / (1000.0 if match.group(2) == "us" else 1.0)


def agreement(runner: DeviceRunner, models: dict[str, bytes]) -> list[dict]:
    rows = []
    for name, onnx_bytes in models.items():
        ours = statistics.median(runner.benchmark(onnx_bytes).latency_ms_p50 for _ in range(3))
        sync, async_ = benchmark_app_p50(onnx_bytes, "sync"), benchmark_app_p50(onnx_bytes, "async")
        rows.append(
            {
                "model": name,
                "ours_ms_p50": ours,
                "benchmark_app_sync_ms_median": sync,
                "benchmark_app_async_ms_median": async_,
                "difference_sync": ours / sync - 1,
                "difference_async": ours / async_ - 1,
            }
        )
    return rows


def contention(runner: DeviceRunner, candidate: bytes, n: int = 5) -> dict:
    idle = [runner.benchmark(candidate).speedup for _ in range(n)]
    trainer = subprocess.Popen([sys.executable, "-c", TRAINER, "600"])
    try:
        time.sleep(8)  # let it import and start training
        busy = [runner.benchmark(candidate).speedup for _ in range(n)]
    finally:
        trainer.kill()
    return {
        "repeats": n,
        "speedup_idle": statistics.median(idle),
        "speedup_training_beside": statistics.median(busy),
        "difference": statistics.median(busy) / statistics.median(idle) - 1,
    }


def main() -> None:
    models = {f"filters {int(r * 100)}%": model_onnx(r) for r in (0.0, 0.25, 0.5, 0.75)}
    baseline = models["filters 0%"]
    runner = DeviceRunner(DeviceConfig(cache=False), baseline)
    info = runner.info()
    result = {
        "device": info["name"],
        "precision": "f32",
        "threads": 1,
        "stability": stability(runner, models["filters 50%"]),
        "agreement": agreement(runner, models),
        "contention": contention(runner, models["filters 50%"]),
    }
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "device.json").write_text(json.dumps(result, indent=2))
    (OUT / "device.md").write_text(render(result))
    print(render(result))


def render(r: dict) -> str:
    s, c = r["stability"], r["contention"]
    lines = [
        "# Device benchmarks",
        "",
        f"`python benchmarks/device.py` on {r['device']}, OpenVINO CPU, {r['precision']}, {r['threads']} thread; "
        "ResNet-20 (digits input, 1x32x32) and copies with 25/50/75 % of every block's first-convolution "
        "filters removed. Raw figures: `device.json`.",
        "",
        "## 1. Stability (goal: speed-up CV <= 2 %)",
        "",
        f"The 50 % model measured {s['repeats']} times, each an adaptive interleaved measurement "
        f"(mean {s['rounds_mean']:.1f} rounds, {s['converged']}/{s['repeats']} met the ±2 % CI target):",
        "",
        "| figure | mean | CV over the repeats |",
        "| --- | --- | --- |",
        f"| p50 latency | {s['latency_ms_p50_mean']:.3f} ms | {100 * s['latency_cv']:.2f} % |",
        f"| speed-up against the baseline | {s['speedup_mean']:.3f}x | {100 * s['speedup_cv']:.2f} % |",
        "",
        "## 2. Agreement with benchmark_app (goal: within 5 %)",
        "",
        "`benchmark_app -hint none -nstreams 1 -nthreads 1 -infer_precision f32 -t 10` on the same ONNX (its latency "
        "hint refuses an explicit thread count; one stream and one thread is what the hint would pick), "
        "against our p50 (median of 3 measurements):",
        "",
        "| model | ours p50 (ms) | benchmark_app `-api sync` (ms) | difference | `-api async` (ms) | difference |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for a in r["agreement"]:
        lines.append(
            f"| {a['model']} | {a['ours_ms_p50']:.3f} | {a['benchmark_app_sync_ms_median']:.3f} | "
            f"{100 * a['difference_sync']:+.1f} % | {a['benchmark_app_async_ms_median']:.3f} | "
            f"{100 * a['difference_async']:+.1f} % |"
        )
    lines += [
        "",
        "We time synchronous `infer()` calls, so `-api sync` is the like-for-like comparison; "
        "the asynchronous API adds a roughly constant per-request overhead, which weighs more the "
        "faster the model.",
    ]
    lines += [
        "",
        "## 4. Contention (goal: within 3 %)",
        "",
        f"Speed-up of the 50 % model, median of {c['repeats']} measurements: idle {c['speedup_idle']:.3f}x, "
        f"with a ResNet-20 training process on the other core {c['speedup_training_beside']:.3f}x "
        f"({100 * c['difference']:+.1f} %).",
        "",
        "Benchmark 3, overlap of measuring and fine-tuning: [overlap.md](overlap.md).",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
