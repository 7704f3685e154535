"""The ImageNet zoo at 224x224 on the device: the baseline's latency and three uniform pruning ratios.

    python benchmarks/imagenet_latency.py [--models mobilenet_v2 resnet18 mobilenet_v3_small]

Random weights (latency does not depend on them). For each model, the baseline's
p50 latency and, at 25/50/75 % of the filters of every block's first convolution
removed (the expansion of each inverted residual; ResNet-18's conv1 of each
block), the speed-up measured interleaved against the baseline, with its 95 % CI,
and the MACs. OpenVINO on the CPU, f32, one thread, as a search measures.
Writes ``docs/benchmarks/imagenet_latency.md`` and ``.json``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from edge_tune.compression import PrunerSpec, apply_pruners, count_macs_params
from edge_tune.device import DeviceConfig, DeviceRunner
from edge_tune.export import to_onnx
from edge_tune.models import create_model

OUT = Path(__file__).resolve().parent.parent / "docs" / "benchmarks"
RATIOS = (0.25, 0.5, 0.75)
EXAMPLE = torch.zeros(1, 3, 224, 224)
# Each block's first convolution: pruning its filters narrows the block inside, never its output.
FIRST_CONVS = {
    "mobilenet_v2": r"features\.([2-9]|1[0-7])\.conv\.0\.0",  # the 1x1 expansions (block 1 has none)
    "mobilenet_v3_small": r"features\.([2-9]|1[01])\.block\.0\.0",  # expansions (block 1 has none)
    "resnet18": r"layer\d\.\d\.conv1",
}


def pruned(name: str, ratio: float) -> torch.nn.Module:
    torch.manual_seed(0)
    model = create_model(name, num_classes=1000, in_channels=3).eval()
    if ratio:
        spec = PrunerSpec("p", "L1RankedStructureParameterPruner", "Filters", ratio, (FIRST_CONVS[name],))
        apply_pruners(model, [spec], EXAMPLE)
    return model


def measure(name: str) -> dict:
    base = pruned(name, 0.0)
    runner = DeviceRunner(DeviceConfig(cache=False), to_onnx(base, EXAMPLE))
    try:
        reference = runner.benchmark(to_onnx(base, EXAMPLE))
        rows = []
        for ratio in RATIOS:
            model = pruned(name, ratio)
            r = runner.benchmark(to_onnx(model, EXAMPLE))
            rows.append(
                {
                    "ratio": ratio,
                    "speedup": r.speedup,
                    "speedup_ci": [r.speedup_ci_low, r.speedup_ci_high],
                    "rounds": r.rounds,
                    "macs": count_macs_params(model, EXAMPLE)[0],
                }
            )
        device = runner.info()["name"]
    finally:
        runner.close()
    return {
        "model": name,
        "device": device,
        "baseline_latency_ms_p50": reference.latency_ms_p50,
        "baseline_latency_ms_p90": reference.latency_ms_p90,
        "precision": reference.precision,
        "baseline_macs": count_macs_params(base, EXAMPLE)[0],
        "rows": rows,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", nargs="+", default=list(FIRST_CONVS))
    args = p.parse_args()
    results = [measure(m) for m in args.models]
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "imagenet_latency.json").write_text(json.dumps(results, indent=2) + "\n")
    lines = [
        "# The ImageNet zoo at 224x224 on the device",
        "",
        "`python benchmarks/imagenet_latency.py`: random weights; every block's first convolution pruned by "
        "the same fraction of its filters; speed-up interleaved against the unpruned model (median of the "
        "per-round ratios, 95 % CI); OpenVINO on the CPU, f32, one thread.",
        "",
        "| model | baseline p50 ms (p90) | filters removed | MACs | speed-up (95 % CI) |",
        "| --- | --- | --- | --- | --- |",
    ]
    for res in results:
        head = f"| {res['model']} | {res['baseline_latency_ms_p50']:.2f} ({res['baseline_latency_ms_p90']:.2f})"
        lines.append(f"{head} | 0 % | {res['baseline_macs'] / 1e6:.0f} M | 1 |")
        for r in res["rows"]:
            lo, hi = r["speedup_ci"]
            lines.append(f"| | | {r['ratio']:.0%} | {r['macs'] / 1e6:.0f} M | {r['speedup']:.3f} ({lo:.3f}-{hi:.3f}) |")
    lines += ["", f"Device: {results[0]['device']}, precision {results[0]['precision']}."]
    (OUT / "imagenet_latency.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
