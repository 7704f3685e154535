"""Engines: the same models measured in this process and under ``--device-python`` interpreters.

    python benchmarks/engines.py --python PY [--python PY ...]   # writes docs/benchmarks/engines.md and .json

For ResNet-20 (digits input) and copies with 25/50/75 % of every block's first
convolution's filters removed, each engine reports: the speed-up against the
baseline and the p50 latency (median of 3 adaptive measurements), the MACs
OpenVINO counts, and how often its top-1 class agrees with PyTorch's on the
359 validation images. Also the cost of one request round trip (load and
release of the ResNet-20 ONNX), which is all the protocol adds: timing runs
inside the server.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from edge_tune.compression import PrunerSpec, apply_pruners, count_macs_params
from edge_tune.data import load_dataset
from edge_tune.device import DeviceConfig, DeviceRunner
from edge_tune.export import to_onnx
from edge_tune.models import create_model

OUT = Path(__file__).resolve().parent.parent / "docs" / "benchmarks"
RATIOS = (0.0, 0.25, 0.5, 0.75)
EXAMPLE = torch.zeros(1, 1, 32, 32)


def torch_model(ratio: float) -> torch.nn.Module:
    torch.manual_seed(0)
    model = create_model("resnet20", num_classes=10, in_channels=1).eval()
    if ratio > 0:
        spec = PrunerSpec("p", "L1RankedStructureParameterPruner", "Filters", ratio, (r"layer\d\.\d\.conv1",))
        apply_pruners(model, [spec], EXAMPLE)
    return model


def measure(python: str, images: torch.Tensor) -> dict:
    baseline = to_onnx(torch_model(0.0), EXAMPLE)
    runner = DeviceRunner(DeviceConfig(cache=False, python=python), baseline)
    info = runner.info()
    rows = []
    for ratio in RATIOS:
        model = torch_model(ratio)
        onnx_bytes = to_onnx(model, EXAMPLE)
        with torch.no_grad():
            classes = model(images).argmax(1).numpy()  # PyTorch's answers are the labels: top-1 = agreement
        runner.set_eval_data((images.numpy(), classes))
        runs = [runner.benchmark(onnx_bytes) for _ in range(3)]
        rows.append(
            {
                "model": f"filters {int(ratio * 100)}%",
                "speedup": statistics.median(r.speedup for r in runs),
                "latency_ms_p50": statistics.median(r.latency_ms_p50 for r in runs),
                "precision": runs[0].precision,
                "ov_macs": runs[0].ov_macs,
                "torch_macs": count_macs_params(model, EXAMPLE)[0],
                "agreement_with_pytorch": runner.evaluate(onnx_bytes).top1,
            }
        )
    trips = []
    for _ in range(20):
        start = time.perf_counter()
        runner.engine.release(runner.engine.load(baseline)["handle"])
        trips.append(1e3 * (time.perf_counter() - start))
    runner.close()
    return {
        "engine": "in-process" if not python else "--device-python",
        "runtime": info["runtime"].split("-")[0],
        "api": info["api"],
        "python": info["python"],
        "load_release_ms_median": statistics.median(trips),
        "models": rows,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--python", action="append", default=[], help="an interpreter with numpy and openvino")
    args = parser.parse_args()
    images = load_dataset("digits").x_val
    result = {"engines": [measure(py, images) for py in ["", *args.python]]}
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "engines.json").write_text(json.dumps(result, indent=2))
    (OUT / "engines.md").write_text(render(result))
    print(render(result))


def render(r: dict) -> str:
    lines = [
        "# Engines: OpenVINO in this process and under `--device-python`",
        "",
        "`python benchmarks/engines.py --python PY ...`: OpenVINO CPU, f32, 1 thread, one engine at a time on "
        "an otherwise idle machine. ResNet-20 (digits input) and copies with 25/50/75 % of every block's "
        "first-convolution filters removed. Speed-up and p50 are medians of 3 adaptive measurements; "
        "'agrees' is the share of the 359 validation images whose top-1 class matches PyTorch's. "
        "Raw figures: `engines.json`.",
        "",
        "| engine | OpenVINO | Python | model | speed-up | p50 (ms) | precision | MACs = PyTorch's | agrees |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for e in r["engines"]:
        for m in e["models"]:
            lines.append(
                f"| {e['engine']} | {e['runtime']} ({e['api']}) | {e['python']} | {m['model']} | "
                f"{m['speedup']:.3f}x | {m['latency_ms_p50']:.3f} | {m['precision']} | "
                f"{'yes' if m['ov_macs'] == m['torch_macs'] else 'NO'} ({m['ov_macs'] / 1e6:.1f} M) | "
                f"{m['agreement_with_pytorch']:.1f} % |"
            )
    lines += ["", "One request's round trip (load and release of the 1.1 MB ResNet-20 ONNX), median of 20:", ""]
    lines += [
        f"- {e['engine']} (OpenVINO {e['runtime']}, Python {e['python']}): {e['load_release_ms_median']:.2f} ms"
        for e in r["engines"]
    ]
    lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
