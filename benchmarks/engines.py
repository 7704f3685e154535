"""Engines: the same models measured by OpenVINO in this process, under ``--device-python`` interpreters,
and by ONNX Runtime.

    python benchmarks/engines.py [--device CPU] [--device ort:CPU] [--python PY ...]
    # writes docs/benchmarks/engines.md and .json; an engine measured before and not now keeps its rows

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


def measure(python: str, images: torch.Tensor, device: str = "CPU") -> dict:
    baseline = to_onnx(torch_model(0.0), EXAMPLE)
    runner = DeviceRunner(DeviceConfig(device=device, cache=False, python=python), baseline)
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
        "engine": ("in-process" if not python else "--device-python") + (f" ({device})" if device != "CPU" else ""),
        "runtime": info["runtime"].split("-")[0],
        "api": info["api"],
        "python": info["python"],
        "load_release_ms_median": statistics.median(trips),
        "models": rows,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--python", action="append", default=[], help="an interpreter with numpy and openvino")
    parser.add_argument("--device", action="append", default=[], help="in this process: CPU (default), ort:CPU")
    args = parser.parse_args()
    images = load_dataset("digits").x_val
    measured = [measure("", images, d) for d in args.device or ["CPU"]]
    measured += [measure(py, images) for py in args.python]
    old = json.loads((OUT / "engines.json").read_text())["engines"] if (OUT / "engines.json").exists() else []
    key = lambda e: (e["engine"], e["runtime"], e["python"])  # noqa: E731
    result = {"engines": [e for e in old if key(e) not in {key(m) for m in measured}] + measured}
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "engines.json").write_text(json.dumps(result, indent=2))
    (OUT / "engines.md").write_text(render(result))
    print(render(result))


def _runtime(e: dict) -> str:
    """Engines measured before ONNX Runtime joined give OpenVINO's bare version."""
    return e["runtime"] if e["runtime"].startswith("ONNX") else f"OpenVINO {e['runtime']}"


def render(r: dict) -> str:
    lines = [
        "# Engines: OpenVINO in this process and under `--device-python`, and ONNX Runtime",
        "",
        "`python benchmarks/engines.py --device CPU --device ort:CPU --python PY ...`: CPU, f32, 1 thread, one "
        "engine at a time on an otherwise idle machine. ResNet-20 (digits input) and copies with 25/50/75 % of every "
        "block's "
        "first-convolution filters removed. Speed-up and p50 are medians of 3 adaptive measurements; "
        "'agrees' is the share of the 359 validation images whose top-1 class matches PyTorch's. "
        "Raw figures: `engines.json`.",
        "",
        "| engine | runtime | Python | model | speed-up | p50 (ms) | precision | runtime's MACs = PyTorch's | agrees |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for e in r["engines"]:
        for m in e["models"]:
            lines.append(
                f"| {e['engine']} | {_runtime(e)} ({e['api']}) | {e['python']} | {m['model']} | "
                f"{m['speedup']:.3f}x | {m['latency_ms_p50']:.3f} | {m['precision']} | "
                f"{'yes' if m['ov_macs'] == m['torch_macs'] else 'NO'} ({m['ov_macs'] / 1e6:.1f} M) | "
                f"{m['agreement_with_pytorch']:.1f} % |"
            )
    ov = next((e for e in r["engines"] if e["engine"] == "in-process"), None)
    ort = next((e for e in r["engines"] if e["engine"] == "in-process (ort:CPU)"), None)
    if ov and ort:
        lines += [
            "",
            f"The same candidates on both runtimes, in this process ({_runtime(ov)} against {_runtime(ort)}): "
            "what pruning buys depends on the runtime that runs the model. Each speed-up is interleaved against "
            "its own runtime's baseline; the p50s of the two runtimes were measured minutes apart, so compare "
            "them only roughly.",
            "",
            "| model | OpenVINO speed-up | ONNX Runtime speed-up | OpenVINO p50 (ms) | ONNX Runtime p50 (ms) |",
            "| --- | --- | --- | --- | --- |",
        ]
        for a, b in zip(ov["models"], ort["models"], strict=True):
            lines.append(
                f"| {a['model']} | {a['speedup']:.3f}x | {b['speedup']:.3f}x | {a['latency_ms_p50']:.3f} | "
                f"{b['latency_ms_p50']:.3f} |"
            )
    lines += ["", "One request's round trip (load and release of the 1.1 MB ResNet-20 ONNX), median of 20:", ""]
    lines += [
        f"- {e['engine']} ({_runtime(e)}, Python {e['python']}): {e['load_release_ms_median']:.2f} ms"
        for e in r["engines"]
    ]
    lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
