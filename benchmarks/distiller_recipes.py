"""Distiller's own CIFAR ResNet recipes, run as their authors wrote them with ``--schedule``, on digits.

    python benchmarks/distiller_recipes.py --distiller DIR [--only NAME ...] [--max-epochs 8] [--baseline-epochs 8]

``DIR`` is a checkout of IntelLabs/distiller (Apache-2.0); the recipes are read
from ``DIR/examples`` when this runs and are not copied into the project.
Each recipe is checked first (``--check``: planned MACs, or the refusal with
its file and line), then run as one trial on ``digits`` with Distiller's
CIFAR network (3-channel input: the grey images are repeated over 3
channels, so that MAC counts compare with the files' headers), from a
baseline trained once per network (``--baseline-epochs``) and cached. What
had to change is listed per recipe: ``--truncate-lr`` for learning-rate
policies written for 200-400 epochs, and, for recipes needing more than
``--max-epochs`` fine-tuning epochs (AGP: 39-49, SSL: 180), every policy's
epochs divided by the smallest whole number that brings them within it: on
two CPU cores a ResNet-20 epoch of digits takes about 16 s on the one thread
a trial has, a ResNet-56 epoch about 45 s. Sparsities, and so the
architectures and their MACs, are the recipes' own.
Results: docs/benchmarks/distiller_recipes.md (and .json beside it).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from torch import nn

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "docs" / "benchmarks" / "distiller_recipes"
RECIPES = [
    "agp-pruning/resnet20_filters.schedule_agp.yaml",
    "agp-pruning/resnet20_filters.schedule_agp_2.yaml",
    "agp-pruning/resnet20_filters.schedule_agp_3.yaml",
    "agp-pruning/resnet20_filters.schedule_agp_4.yaml",
    "agp-pruning/resnet20_filters.bn_fold.schedule_agp.yaml",
    "pruning_filters_for_efficient_convnets/resnet56_cifar_filter_rank.yaml",
    "pruning_filters_for_efficient_convnets/resnet56_cifar_filter_rank_v2.yaml",
    "pruning_filters_for_efficient_convnets/resnet56_cifar_channel_rank.yaml",
    "network_trimming/resnet56_cifar_activation_apoz.yaml",
    "network_trimming/resnet56_cifar_activation_apoz_v2.yaml",
    "ssl/ssl_filter-removal_training.yaml",
    "ssl/ssl_channels-removal_training.yaml",
    "ssl/ssl_channels-removal_training_x1.8.yaml",
    "ssl/ssl_4D-removal_training.yaml",
    "network_slimming/resnet20_slimming.yaml",
    "network_surgery/resnet20.network_surgery.yaml",
    "drop_filter/resnet20_cifar_randomlevel_training.yaml",
    "drop_filter/plain20_cifar_dropfilter_training.yaml",
]


def resnet20_cifar(num_classes: int) -> nn.Module:
    """Distiller's ``resnet20_cifar``: edge_tune's ResNet-20 with a 3-channel input."""
    from edge_tune.models import create_model

    return create_model("resnet20", num_classes=num_classes, in_channels=3)


def resnet56_cifar(num_classes: int) -> nn.Module:
    from edge_tune.models import create_model

    return create_model("resnet56", num_classes=num_classes, in_channels=3)


def claims(text: str) -> list[int]:
    """The MAC counts a recipe's header states (the baseline's first, the pruned network's last)."""
    return [int(m.replace(",", "")) for m in re.findall(r"Total MACs: ([\d,]+)", text)]


def scaled(doc: dict, k: int) -> dict:  # type: ignore[type-arg]
    """Every policy's epochs divided by ``k`` (at least one epoch apart where they were apart)."""
    for p in doc.get("policies") or []:
        if "epochs" in p:
            p["epochs"] = sorted({e // k for e in p["epochs"]})
        for key in ("starting_epoch", "ending_epoch"):
            if key in p:
                p[key] = -(-p[key] // k) if key == "ending_epoch" else p[key] // k
        if "frequency" in p:
            p["frequency"] = max(1, p["frequency"] // k)
    return doc


def cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "edge_tune.run", *args]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=env, timeout=7200)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--distiller", type=Path, required=True, help="a checkout of IntelLabs/distiller")
    ap.add_argument("--only", nargs="*", default=None, help="recipes whose path contains one of these")
    ap.add_argument("--max-epochs", type=int, default=8, help="recipes needing more epochs are scaled down")
    ap.add_argument("--baseline-epochs", type=int, default=8, help="epochs of each network's baseline")
    ap.add_argument("--work", type=Path, default=None, help="cache and experiment folders (default: a temp dir)")
    args = ap.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="distiller-recipes-"))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "benchmarks"), str(REPO)]), "WANDB_MODE": "off"}
    rows = []
    for rel in RECIPES:
        if args.only and not any(o in rel for o in args.only):
            continue
        source = args.distiller / "examples" / rel
        text = source.read_text()
        model = "distiller_recipes:resnet56_cifar" if "resnet56" in rel else "distiller_recipes:resnet20_cifar"
        recipe = work / "recipes" / rel.replace("/", "__")
        recipe.parent.mkdir(parents=True, exist_ok=True)
        recipe.write_text(text)
        changes = ["--truncate-lr"]
        row: dict = {"recipe": rel, "claimed_macs": claims(text)}  # type: ignore[type-arg]
        check = cli("--schedule", str(recipe), "--model", model, "--check", "--truncate-lr", env=env)
        needed = re.search(r"the schedule needs (\d+)", check.stdout)
        if check.returncode == 0 and needed and int(needed.group(1)) > args.max_epochs:
            k = -(-int(needed.group(1)) // args.max_epochs)
            recipe.write_text(yaml.safe_dump(scaled(yaml.safe_load(text), k), sort_keys=False))
            changes.append(f"policies' epochs / {k} ({needed.group(1)} -> ")
            check = cli("--schedule", str(recipe), "--model", model, "--check", "--truncate-lr", env=env)
            needed = re.search(r"the schedule needs (\d+)", check.stdout)
            changes[-1] += f"{needed.group(1) if needed else '?'} epochs)"
        row["changes"] = changes
        if check.returncode != 0:
            row["refused"] = check.stderr.strip().splitlines()[-1].removeprefix("edge-tune: error: ")
            row["refused"] = row["refused"].replace(str(recipe), Path(rel).name)
            rows.append(row)
            print(f"{rel}: refused: {row['refused']}", flush=True)
            continue
        planned = re.search(r"final architecture: ([\d,]+) MACs", check.stdout)
        row["planned_macs"] = int(planned.group(1).replace(",", "")) if planned else None
        row["epochs"] = int(needed.group(1)) if needed else None
        started = time.perf_counter()
        name = Path(rel).stem.replace(".", "_")
        run = cli(
            "--schedule", str(recipe), "--model", model, "--truncate-lr", "--cache-dir", str(work / "cache"),
            "--baseline-epochs", str(args.baseline_epochs),
            "--output-dir", str(work / "out"), "--name", name, "--wandb", "off", "--quiet", env=env,
        )  # fmt: skip
        row["seconds"] = round(time.perf_counter() - started)
        best_file = work / "out" / name / "best.json"
        if run.returncode not in (0, 3) or not best_file.is_file():
            row["error"] = (run.stderr.strip().splitlines() or ["?"])[-1][:300]
            rows.append(row)
            print(f"{rel}: run failed: {row['error']}", flush=True)
            continue
        best = json.loads(best_file.read_text())
        m, base = best["metrics"], best["experiment"]["baseline"]
        row |= {
            "macs": m["macs"],
            "baseline_macs": base["macs"],
            "speedup": m["speedup"],
            "speedup_ci": [m.get("speedup_ci_low"), m.get("speedup_ci_high")],
            "top1": m["top1"],
            "top1_device": m["top1_device"],
            "baseline_top1": base["top1"],
            "baseline_top1_device": base["top1_device"],
            "zeros": m.get("zeros"),
        }
        rows.append(row)
        print(f"{rel}: {m['macs']:,} MACs, {m['speedup']:.3f}x, top1 {m['top1']:.2f}%", flush=True)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.with_suffix(".json").write_text(json.dumps(rows, indent=2))
    md = OUT.with_suffix(".md")
    notes = md.read_text().partition("\nWhat the table shows")[1:] if md.exists() else ("", "")
    md.write_text(render(rows) + "".join(notes))  # the hand-written reading of the table is kept


def _macs(n: int | None) -> str:
    return f"{n:,}" if isinstance(n, int) else "—"


def render(rows: list[dict]) -> str:  # type: ignore[type-arg]
    lines = [
        "# Distiller's CIFAR ResNet recipes, run as written",
        "",
        "Each recipe of IntelLabs/distiller's `examples/` run unchanged with `python -m edge_tune.run --schedule "
        "FILE`, as one trial, on `digits` with Distiller's CIFAR network (3-channel input, grey images repeated, "
        "so that MACs compare with the headers), from a baseline trained for 8 epochs and cached; the device is "
        "the CPU through OpenVINO. Produced by `python benchmarks/distiller_recipes.py --distiller DIR`.",
        "",
        "| recipe | MACs claimed (header) | MACs planned (`--check`) | MACs run (device-checked) | epochs | changes | "
        "speed-up (95% CI) | top-1 PyTorch / device (baseline) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        claimed = _macs(r["claimed_macs"][-1]) if r["claimed_macs"] else "—"
        if "refused" in r:
            lines.append(f"| `{r['recipe']}` | {claimed} | refused: {r['refused']} | | | | | |")
            continue
        if "error" in r:
            lines.append(f"| `{r['recipe']}` | {claimed} | {_macs(r['planned_macs'])} | failed: {r['error']} | | | | |")
            continue
        low, high = r["speedup_ci"]
        ci = f" ({low:.3f}-{high:.3f})" if low is not None and high is not None else ""
        lines.append(
            f"| `{r['recipe']}` | {claimed} | {_macs(r['planned_macs'])} | {_macs(r['macs'])} | {r['epochs']} | "
            f"{'; '.join(r['changes'])} | {r['speedup']:.3f}x{ci} | {r['top1']:.2f} / {r['top1_device']:.2f} "
            f"({r['baseline_top1']:.2f} / {r['baseline_top1_device']:.2f}) |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
