"""Which pruning paradigm helps latency? Each one at the same nominal sparsity, side by side.

    python -m edge_tune.study [--sparsity 0.5] [--out study]

Runs every paradigm's search space at one configuration — each float
parameter at ``--sparsity`` (within its range), each choice at its first
value — on the space's model and dataset: the schedule through the space's
fine-tuning, then the device measures the result against the baseline and
evaluates it. "INT8 only" is ``filter_prune_int8`` at sparsity 0. Writes
``study.md`` and ``study.json`` to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from edge_tune.errors import UserError, exit_code
from edge_tune.tool_flags import add_model_flags, baseline_from_flags

__all__ = ["PARADIGMS", "main", "run_paradigm"]

# (label, space, nominal sparsity override or None for --sparsity)
PARADIGMS: tuple[tuple[str, str, float | None], ...] = (
    ("filters (one-shot)", "filter_prune", None),
    ("channels (one-shot)", "channel_prune", None),
    ("fine-grained (AGP)", "fine_grained_agp", None),
    ("hybrid (AGP filters + fine + FC rows)", "hybrid", None),
    ("INT8 only", "filter_prune_int8", 0.0),
    ("filters + INT8", "filter_prune_int8", None),
)


def _config(space: Any, sparsity: float) -> dict[str, Any]:
    """Every ratio at ``sparsity`` where its range allows (a float's range of ratios), else at its low end."""
    return {name: p.clamp(sparsity) for name, p in space.params.items()}


def run_paradigm(space: Any, sparsity: float, baseline: Any, data: Any, runner: Any, epochs: int | None) -> dict:
    """Compress the baseline by ``space`` at ``sparsity``, fine-tune, measure; one result row."""
    from edge_tune.compression import CompressionScheduler, parse_schedule
    from edge_tune.train import TrainConfig, evaluate, fine_tune, make_optimizer
    from edge_tune.trial import deployable

    config = _config(space, sparsity)
    schedule_doc, finetune = space.render(config)
    schedule = parse_schedule(schedule_doc)
    model = baseline.build(data.num_classes, data.in_channels)
    example = torch.zeros(1, *data.input_shape)  # (1, C, H, W)
    cfg = replace(TrainConfig(epochs=3, lr=0.01), **{**finetune, **({"epochs": epochs} if epochs else {})})
    cfg = replace(cfg, epochs=max(cfg.epochs, schedule.last_epoch() + 1))  # the schedule's last step must run
    compression = CompressionScheduler(model, schedule, example, lambda m: make_optimizer(m, cfg))
    start = time.perf_counter()
    fine_tune(model, data, cfg, on_epoch_start=compression.on_epoch_start, on_epoch_end=lambda e, *_: None)
    report = compression.finish()
    acc = evaluate(model, data.val)
    _, blob = deployable(model, example, schedule, data)
    latency, on_device = runner.benchmark(blob), runner.evaluate(blob)
    nonzero = sum(int((p != 0).sum()) for p in model.parameters())
    return {
        "config": config,
        "epochs": cfg.epochs,
        "macs": report.macs_after,
        "macs_ratio": report.macs_after / report.macs_before,
        "params": report.params_after,
        "nonzero_params_ratio": nonzero / report.params_before,
        "speedup": latency.speedup,
        "speedup_ci": [latency.speedup_ci_low, latency.speedup_ci_high],
        "latency_ms_p50": latency.latency_ms_p50,
        "latency_cached": latency.cached,  # an earlier paradigm reached the same architecture
        "top1": acc.top1,
        "top1_device": on_device.top1,
        "int8": schedule.quantizer is not None,
        "seconds": time.perf_counter() - start,
    }


def render(result: dict) -> str:
    b = result["baseline"]
    lines = [
        "# Study: which pruning paradigm helps latency",
        "",
        f"`{result['command']}` — {b['model']} on {b['dataset']}, OpenVINO {result['device']} "
        f"(f32 baseline, 1 thread), nominal sparsity {result['sparsity']:.2f} for every paradigm "
        "(each float parameter of its space at that value, within its range), fine-tuned with the "
        "space's recipe; one run each. Speed-up: median of interleaved rounds against the baseline, "
        "95 % CI in brackets.",
        "",
        f"Baseline: top-1 {b['top1']:.2f} % (device {b['top1_device']:.2f} %), {b['macs'] / 1e6:.1f} M MACs, "
        f"{b['params'] / 1e3:.0f} k parameters, {b['latency_ms_p50']:.3f} ms p50.",
        "",
        "| paradigm | space | MACs | parameters (non-zero) | speed-up | top-1 PyTorch | top-1 device |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in result["rows"]:
        lo, hi = r["speedup_ci"]
        lines.append(
            f"| {r['paradigm']} | `{r['space']}` | {100 * r['macs_ratio']:.0f} % | "
            f"{100 * r['params'] / b['params']:.0f} % ({100 * r['nonzero_params_ratio']:.0f} %) | "
            f"{r['speedup']:.3f}×{' *' if r['latency_cached'] else ''} [{lo:.3f}, {hi:.3f}] | "
            f"{r['top1']:.2f} % | {r['top1_device']:.2f} % |"
        )
    if any(r["latency_cached"] for r in result["rows"]):
        lines += [
            "",
            "\\* The same architecture as a row above (equal channel counts, other channels kept): "
            "the device measured it once, and the speed-up is that measurement.",
        ]
    lines += ["", "Raw figures, configurations and timings: `study.json`.", ""]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m edge_tune.study", description=__doc__.split("\n")[0])
    p.add_argument("--sparsity", type=float, default=0.5, help="nominal sparsity of every paradigm (default 0.5)")
    p.add_argument(
        "--epochs", type=int, default=None, help="fine-tuning epochs (default: each space's; at least its schedule's)"
    )
    add_model_flags(p, model="", dataset="")  # "": the paradigms' spaces' own
    p.add_argument("--device", default="CPU")
    p.add_argument("--device-python", default="", metavar="PATH")
    p.add_argument("--only", default="", help="comma-separated space names to run (default: all)")
    p.add_argument("--out", type=Path, default=Path("study"))
    return p


def run(args: argparse.Namespace, argv: list[str]) -> dict:
    from edge_tune.compression import count_macs_params
    from edge_tune.data import Chunks
    from edge_tune.device import DeviceConfig, DeviceRunner
    from edge_tune.export import to_onnx
    from edge_tune.space import find_space
    from edge_tune.train import evaluate

    if not 0 <= args.sparsity < 1:
        raise UserError(f"--sparsity {args.sparsity}: must be in [0, 1)")
    only = {s for s in args.only.split(",") if s}
    chosen = [p for p in PARADIGMS if not only or p[1] in only]
    if not chosen:
        raise UserError(f"--only {args.only}: none of {', '.join(sorted({p[1] for p in PARADIGMS}))}")
    first = find_space(chosen[0][1])
    model_name = args.model or first.model
    baseline, data = baseline_from_flags(args, model_name, args.dataset or first.dataset, args.weights or first.weights)
    model = baseline.build(data.num_classes, data.in_channels)
    example = torch.zeros(1, *data.input_shape)
    base_onnx = to_onnx(model, example)
    runner = DeviceRunner(
        DeviceConfig(device=args.device, python=args.device_python, cache=False),  # every row measured, none reused
        base_onnx,
        Chunks(data.val),
    )
    macs, params = count_macs_params(model, example)
    base_latency = runner.benchmark(base_onnx)
    result: dict[str, Any] = {
        "command": "python -m edge_tune.study " + " ".join(argv),
        "device": f"{args.device} ({runner.info()['name']})",
        "sparsity": args.sparsity,
        "baseline": {
            "model": model_name,
            "source": baseline.source,
            "dataset": data.name,
            "top1": evaluate(model, data.val).top1,
            "top1_device": runner.evaluate(base_onnx).top1,
            "macs": macs,
            "params": params,
            "latency_ms_p50": base_latency.latency_ms_p50,
        },
        "rows": [],
    }
    try:
        for label, name, override in chosen:
            space = find_space(name)
            sparsity = args.sparsity if override is None else override
            row = run_paradigm(space, sparsity, baseline, data, runner, args.epochs)
            result["rows"].append({"paradigm": label, "space": name, **row})
            print(f"{label:40} speedup {row['speedup']:.3f}x  top1 {row['top1']:.2f}% / {row['top1_device']:.2f}%")
    finally:
        runner.close()
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "study.json").write_text(json.dumps(result, indent=2))
    (args.out / "study.md").write_text(render(result))
    print(render(result))
    return result


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    return exit_code("edge_tune.study", lambda: run(build_parser().parse_args(args), args))


if __name__ == "__main__":
    sys.exit(main())
