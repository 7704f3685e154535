"""Sensitivity analysis: each prunable group alone, at ratios 0.1 ... 0.9, without fine-tuning.

    python -m edge_tune.sensitivity --model resnet20 --dataset digits [--write-space my_space.yaml]

As Distiller's sensitivity analysis did, every dependency group of filters
(a residual add couples the convolutions feeding it into one group) is pruned
on its own at each ratio and the accuracy is measured without fine-tuning;
unlike it, the latency of each pruned network is measured on the device,
interleaved with the baseline. Writes ``sensitivity.csv`` and
``sensitivity.png``; with ``--write-space``, a filter-pruning search space
over the groups that buy the most latency per accuracy point lost, each
ratio's range capped where the accuracy without fine-tuning fell more than
``--max-drop`` points — the selection the dissertation made by hand. With
``--blocks`` as well, the space has one ratio for every inner group instead
(a group no residual add couples: a block's inner width, such as ResNet's
``conv1`` of each block or MobileNetV2's expansion with its depthwise
convolution), each capped the same way: per-layer choices, for a searcher
that can make them.

    python -m edge_tune.sensitivity --model resnet56 --write-space resnet56_blocks.yaml --blocks
"""

from __future__ import annotations

import argparse
import copy
import csv
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

from edge_tune.compression import PrunerSpec, apply_pruners, count_macs_params
from edge_tune.compression.pruning import Pruner
from edge_tune.errors import UserError, exit_code
from edge_tune.tool_flags import add_model_flags, baseline_from_flags

__all__ = [
    "GroupPoint",
    "block_space",
    "inner_groups",
    "main",
    "prunable_groups",
    "select_groups",
    "space_for",
]

RATIOS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


@dataclass(frozen=True)
class GroupPoint:
    group: str  # the group's first convolution
    members: tuple[str, ...]  # every convolution whose filters the group removes together
    ratio: float  # fraction of the group's filters removed
    channels: int  # channels left
    top1: float  # percent, PyTorch, no fine-tuning
    top1_drop: float  # points below the baseline
    macs: int
    speedup: float  # device, against the baseline, interleaved
    speedup_ci_low: float
    speedup_ci_high: float


def prunable_groups(model: nn.Module, example: torch.Tensor) -> list[tuple[str, ...]]:
    """The model's filter groups, each as its convolutions' names in model order."""
    pruner = Pruner(model, example)
    groups: dict[tuple[str, ...], None] = {}
    for conv in model.modules():
        if isinstance(conv, nn.Conv2d) and not (conv.groups > 1 and conv.groups == conv.in_channels):
            groups.setdefault(pruner.group_members(conv))  # a depthwise conv's filters are its producer's
    return [members for members in groups if members]


def inner_groups(model: nn.Module, example: torch.Tensor) -> list[tuple[str, ...]]:
    """Groups that no residual add couples: one convolution (with the depthwise ones its filters feed)."""
    depthwise = {
        n for n, m in model.named_modules() if isinstance(m, nn.Conv2d) and m.groups > 1 and m.groups == m.in_channels
    }
    return [g for g in prunable_groups(model, example) if sum(m not in depthwise for m in g) == 1]


def analyse(
    model: nn.Module,
    data: Any,
    runner: Any,
    ratios: tuple[float, ...],
    log: Any = print,
    groups: list[tuple[str, ...]] | None = None,
) -> list[GroupPoint]:
    """Prune each group (default: every one) alone at each ratio; measure top-1 (no fine-tuning) and latency."""
    from edge_tune.export import to_onnx
    from edge_tune.train import evaluate

    example = torch.zeros(1, *data.input_shape)  # (1, C, H, W)
    base_top1 = evaluate(model, data.val).top1
    points = []
    for members in groups if groups is not None else prunable_groups(model, example):
        for ratio in ratios:
            pruned = copy.deepcopy(model)
            spec = PrunerSpec("sensitivity", "L1RankedStructureParameterPruner", "Filters", ratio, members)
            report = apply_pruners(pruned, [spec], example)
            top1 = evaluate(pruned, data.val).top1
            latency = runner.benchmark(to_onnx(pruned, example), profile=False)  # the speed-up is what counts
            (group,) = report.groups
            points.append(
                GroupPoint(
                    members[0], members, ratio, group.channels_after, top1, base_top1 - top1,
                    report.macs_after, latency.speedup, latency.speedup_ci_low, latency.speedup_ci_high,
                )
            )  # fmt: skip
            log(f"{members[0]:24} {ratio:.1f}: top1 {top1:6.2f}%  speedup {latency.speedup:.3f}x")
    return points


def select_groups(points: list[GroupPoint], top: int, max_drop: float) -> list[tuple[str, tuple[str, ...], float]]:
    """The ``top`` groups with the most speed-up per accuracy point lost, and each one's highest ratio
    whose drop stays within ``max_drop``: (group, members, ratio cap)."""
    by_group: dict[str, list[GroupPoint]] = {}
    for p in points:
        by_group.setdefault(p.group, []).append(p)
    ranked = []
    for group, pts in by_group.items():
        allowed = [p for p in pts if p.top1_drop <= max_drop]
        if not allowed:
            continue
        # Latency bought per point of accuracy, at the group's most useful allowed ratio.
        gain = max((p.speedup - 1) / max(p.top1_drop, 0.5) for p in allowed)
        ranked.append((gain, group, pts[0].members, max(p.ratio for p in allowed)))
    ranked.sort(key=lambda r: -r[0])
    return [(g, m, cap) for gain, g, m, cap in ranked[:top] if gain > 0]


def space_for(
    model_name: str,
    dataset: str,
    chosen: list[tuple[str, tuple[str, ...], float]],
    description: str = "",
    ranked: bool = True,
) -> dict[str, Any]:
    """A filter-pruning search space over the chosen groups (one ratio each, capped).

    ``ranked``: parameters are named by rank and group (``g0_layer3_0_conv1``); else by the group alone.
    """
    params: dict[str, Any] = {}
    pruners: dict[str, Any] = {}
    policies: list[dict[str, Any]] = []
    for i, (group, members, cap) in enumerate(chosen):
        param = f"g{i}_{group.replace('.', '_')}" if ranked else group.replace(".", "_")
        params[param] = {"type": "float", "low": 0.0, "high": round(cap, 2)}
        pruners[f"{param}_filters"] = {
            "class": "L1RankedStructureParameterPruner",
            "group_type": "Filters",
            "desired_sparsity": f"${{{param}}}",
            "weights": [f"module.{m}.weight" for m in members],
        }
        policies.append({"pruner": {"instance_name": f"{param}_filters"}, "epochs": [0]})
    policies.append({"extension": {"instance_name": "net_thinner"}, "epochs": [0]})
    policies.append({"lr_scheduler": {"instance_name": "finetune_lr"}, "starting_epoch": 0, "ending_epoch": 3})
    return {
        "description": description
        or f"Filter pruning of the {len(chosen)} groups of {model_name} with the best latency "
        "gain per accuracy point lost (edge_tune.sensitivity).",
        "model": model_name,
        "dataset": dataset,
        "params": params,
        "finetune": {"epochs": 3, "lr": 0.01, "batch_size": 64},
        "search": {"num_samples": 20, "initial_points": 5 if len(chosen) <= 5 else 10},
        "schedule": {
            "version": 1,
            "pruners": pruners,
            "extensions": {"net_thinner": {"class": "FilterRemover", "thinning_func_str": "remove_filters"}},
            "lr_schedulers": {"finetune_lr": {"class": "CosineAnnealingLR", "T_max": 3}},
            "policies": policies,
        },
    }


def block_space(
    model_name: str, dataset: str, groups: list[tuple[str, ...]], caps: dict[str, float] | None = None
) -> dict[str, Any]:
    """One ratio per inner group (``inner_groups``), in model order, named by its first convolution;
    each capped at ``caps[group]`` (default 0.9, as the shipped per-stage spaces)."""
    caps = caps or {}
    chosen = [(g[0], g, caps.get(g[0], 0.9)) for g in groups]
    description = f"Filter pruning of {model_name}'s {len(chosen)} inner groups, each its own ratio."
    return space_for(model_name, dataset, chosen, description, ranked=False)


def plot(points: list[GroupPoint], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (acc_ax, lat_ax) = plt.subplots(1, 2, figsize=(11, 4.2))
    for group in dict.fromkeys(p.group for p in points):
        pts = [p for p in points if p.group == group]
        ratios = [p.ratio for p in pts]
        acc_ax.plot(ratios, [p.top1 for p in pts], marker="o", ms=3, label=group)
        lat_ax.plot(ratios, [p.speedup for p in pts], marker="o", ms=3, label=group)
    acc_ax.set(xlabel="fraction of the group's filters removed", ylabel="top-1 without fine-tuning (%)")
    lat_ax.set(xlabel="fraction of the group's filters removed", ylabel="speed-up on the device (x)")
    lat_ax.axhline(1.0, color="grey", lw=0.8)
    lat_ax.legend(fontsize=7, ncol=2)
    fig.suptitle("Sensitivity of each filter group, pruned alone")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m edge_tune.sensitivity", description=__doc__.split("\n")[0])
    add_model_flags(p, model="resnet20", dataset="digits")
    p.add_argument("--ratios", default=",".join(str(r) for r in RATIOS), help="comma-separated fractions")
    p.add_argument("--device", default="CPU")
    p.add_argument("--device-python", default="", metavar="PATH")
    p.add_argument("--out", type=Path, default=Path("sensitivity"), help="folder for the CSV and the plot")
    p.add_argument("--write-space", type=Path, default=None, metavar="FILE", help="write a reduced search space")
    p.add_argument("--top", type=int, default=3, help="groups in the written space")
    p.add_argument(
        "--blocks",
        action="store_true",
        help="with --write-space: one ratio for every inner group (a block's inner width), not the --top groups",
    )
    p.add_argument("--max-drop", type=float, default=10.0, help="accuracy points a ratio may cost, unfine-tuned")
    return p


def _ratios(text: str) -> tuple[float, ...]:
    try:
        ratios = tuple(float(r) for r in text.split(","))
    except ValueError:
        raise UserError(f"--ratios {text}: expected comma-separated fractions like 0.1,0.5,0.9") from None
    if not ratios or not all(0 < r < 1 for r in ratios):
        raise UserError(f"--ratios {text}: every ratio must be in (0, 1)")
    return ratios


def run(args: argparse.Namespace) -> Path:
    from edge_tune.device import DeviceConfig, DeviceRunner
    from edge_tune.export import to_onnx
    from edge_tune.space import load_space

    ratios = _ratios(args.ratios)
    baseline, data = baseline_from_flags(args, args.model, args.dataset, args.weights)
    model = baseline.build(data.num_classes, data.in_channels)
    example = torch.zeros(1, *data.input_shape)
    runner = DeviceRunner(DeviceConfig(device=args.device, python=args.device_python), to_onnx(model, example))
    try:
        groups = inner_groups(model, example) if args.blocks else None  # the only ones a --blocks space holds
        points = analyse(model, data, runner, ratios, groups=groups)
    finally:
        runner.close()
    args.out.mkdir(parents=True, exist_ok=True)
    with open(args.out / "sensitivity.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=[k for k in GroupPoint.__dataclass_fields__])
        writer.writeheader()
        for p in points:
            writer.writerow({**p.__dict__, "members": "+".join(p.members)})
    plot(points, args.out / "sensitivity.png")
    print(f"baseline: {count_macs_params(model, example)[0]:,} MACs; results in {args.out}")
    if args.write_space and args.blocks:
        inner = inner_groups(model, example)
        caps = {
            g[0]: max((p.ratio for p in points if p.group == g[0] and p.top1_drop <= args.max_drop), default=0.0)
            for g in inner
        }
        kept = [g for g in inner if caps[g[0]] > 0]
        if not kept:
            raise UserError(f"--write-space --blocks: no inner group keeps accuracy within --max-drop {args.max_drop}")
        space = block_space(args.model, args.dataset, kept, caps)
    elif args.write_space:
        chosen = select_groups(points, args.top, args.max_drop)
        if not chosen:
            raise UserError(f"--write-space: no group gains latency within --max-drop {args.max_drop} points")
        space = space_for(args.model, args.dataset, chosen)
    if args.write_space:
        if args.weights is not None:  # the search starts from the same trained network, wherever the file goes
            space = {"weights": str(args.weights.resolve()), **space}
        if args.input_size:
            space = {"input_size": args.input_size, **space}
        if args.mean:  # with --std: normalisation_from_flags has checked they come together
            space = {"mean": args.mean, "std": args.std, **space}
        args.write_space.write_text(yaml.safe_dump(space, sort_keys=False))
        load_space(args.write_space)  # what we write must load
        print(f"search space over {', '.join(space['params'])} written to {args.write_space}")
    return args.out


def main(argv: list[str] | None = None) -> int:
    return exit_code("edge_tune.sensitivity", lambda: run(build_parser().parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
