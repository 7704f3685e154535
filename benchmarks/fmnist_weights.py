"""A search from trained weights on Fashion-MNIST: the "Your own model" path, measured.

    python benchmarks/fmnist_weights.py [--data-dir DIR] [--train-epochs 4] [--trials 8] [--epochs 1]

Step 1 stands in for the user's own training script: ``resnet20`` is trained on
Fashion-MNIST's 60,000 training images and its state dict saved (once; the file
is reused while it exists). Step 2 is the README's command with ``--weights``:
``python -m edge_tune.run --space filter_prune --dataset fashion-mnist --weights
FILE``, with a reduced budget (``--num-samples``, ``--epochs``) so that it fits
in under an hour on two CPU cores. Records the wall time of both steps, the
baseline's top-1 in PyTorch and on the device, the best feasible trial's
speed-up (with its 95 % CI) and top-1, and what one validation image is worth
in points of top-1 beside ``digits``. Writes ``docs/benchmarks/fmnist_weights.md``
and ``.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "docs" / "benchmarks"


def train(weights: Path, data_dir: str | None, epochs: int) -> float:
    """Train resnet20 on Fashion-MNIST and save its state dict; returns the seconds it took."""
    import torch

    from edge_tune.data import load_dataset
    from edge_tune.models import create_model
    from edge_tune.train import TrainConfig, fine_tune

    start = time.perf_counter()
    data = load_dataset("fashion-mnist", data_dir)
    torch.manual_seed(0)
    model = create_model("resnet20", num_classes=10, in_channels=1)
    acc = fine_tune(model, data, TrainConfig(epochs=epochs))
    torch.save(model.state_dict(), weights)
    print(f"trained {epochs} epochs: top-1 {acc.top1:.2f}% -> {weights}", flush=True)
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", default=None, help="Fashion-MNIST's IDX files (default: Debian's package's folder)")
    ap.add_argument("--work", default=os.path.join(tempfile.gettempdir(), "edge_tune_fmnist"), help="weights, run")
    ap.add_argument("--train-epochs", type=int, default=4)
    ap.add_argument("--trials", type=int, default=8)
    ap.add_argument("--epochs", type=int, default=1, help="fine-tuning epochs per trial")
    args = ap.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    weights = work / "resnet20_fmnist.pt"
    train_s = None
    if not weights.exists():
        train_s = train(weights, args.data_dir, args.train_epochs)
    out_dir = work / "runs"
    cmd = [
        sys.executable, "-m", "edge_tune.run", "--space", "filter_prune", "--dataset", "fashion-mnist",
        "--weights", str(weights), "--num-samples", str(args.trials), "--epochs", str(args.epochs), "--truncate-lr",
        "--output-dir", str(out_dir), "--name", "fmnist", "--cache-dir", str(work / "cache"), "--wandb", "off",
    ]  # fmt: skip
    if args.data_dir:
        cmd += ["--data-dir", args.data_dir]
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, text=True, capture_output=True)
    search_s = time.perf_counter() - start
    sys.stdout.write(proc.stdout[-4000:])
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-4000:])
        raise SystemExit(f"the search exited with {proc.returncode}")
    run = out_dir / "fmnist"
    experiment = json.loads((run / "experiment.json").read_text())
    best = json.loads((run / "best.json").read_text())
    rows = json.loads((run / "results.json").read_text())
    base = experiment["baseline"]
    val_images = 10_000
    result = {
        "command": " ".join(cmd[3:]).replace(str(work), "WORK"),  # after "python -m edge_tune.run"
        "train_epochs": args.train_epochs,
        "train_seconds": train_s,
        "search_seconds": search_s,
        "trials": len(rows["trials"]),
        "rows": [{k: t[k] for k in ("trial_id", "status", "config", "outcome")} for t in rows["trials"]],
        "baseline_top1": base["top1"],
        "baseline_top1_device": base["top1_device"],
        "baseline_latency_ms": base["latency_ms"],
        "baseline_source": base["source"].replace(str(work), "WORK"),
        "threshold_top1": experiment["threshold_top1"],
        "points_per_image": 100.0 / val_images,
        "points_per_image_digits": 100.0 / 360,
        "best": best,
    }
    OUT.mkdir(parents=True, exist_ok=True)
    text = json.dumps(result, indent=2, default=str).replace(str(work), "WORK")  # no path of this machine
    (OUT / "fmnist_weights.json").write_text(text + "\n")
    (OUT / "fmnist_weights.md").write_text(report(result))
    print(report(result))


def report(r: dict) -> str:
    best = r["best"]
    m = best.get("metrics", {})
    trials = [
        f"| {t['trial_id']} | {', '.join(f'{v:.3f}' for v in t['config'].values())} | "
        f"{t['outcome'].get('speedup') or float('nan'):.3f}x | {t['outcome'].get('top1')} | "
        f"{t['outcome'].get('top1_device')} |"
        for t in r.get("rows", [])
    ]
    if best["feasible"]:
        found = (
            f"trial {best['trial_id']}: {m['speedup']:.3f}x (95 % CI {m['speedup_ci_low']:.3f}-"
            f"{m['speedup_ci_high']:.3f}), top-1 {m['top1']:.2f} % in PyTorch, {m['top1_device']:.2f} % on the device"
        )
    else:
        found = "none reached the threshold"
    lines = [
        "# A search from trained weights: ResNet-20 on Fashion-MNIST",
        "",
        "Written by `python benchmarks/fmnist_weights.py` (two CPU cores, OpenVINO on the CPU).",
        "",
        f"Command: `python -m edge_tune.run {r['command']}`",
        "",
        "| | |",
        "|---|---|",
        f"| baseline training ({r['train_epochs']} epochs, the user's own script) | "
        + (f"{r['train_seconds']:.0f} s |" if r["train_seconds"] else "reused |"),
        f"| search wall time ({r['trials']} trials) | {r['search_seconds']:.0f} s |",
        f"| baseline | {r['baseline_source']} |",
        f"| baseline top-1, PyTorch / device | {r['baseline_top1']:.2f} % / {r['baseline_top1_device']:.2f} % |",
        f"| baseline p50 latency | {r['baseline_latency_ms']:.3f} ms |",
        f"| threshold | {r['threshold_top1']:.2f} % top-1 |",
        f"| one validation image | {r['points_per_image']:.2f} points (digits: {r['points_per_image_digits']:.2f}) |",
        f"| best feasible | {found} |",
        f"| its configuration | {json.dumps(best.get('config', {}))} |",
        "",
        "| trial | stage ratios | speed-up | top-1 % | on the device % |",
        "|---|---|---|---|---|",
        *trials,
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
