"""Benchmark 5a: a table of real trials of ``filter_prune``, for replaying searchers.

    python benchmarks/search_table.py [--workers 2]   # writes docs/benchmarks/search_table.csv
    python benchmarks/search_table.py --seeds 1 2     # writes docs/benchmarks/search_table_seeds.csv

Every configuration of a full-factorial grid over the space's three stage
ratios (LEVELS each), plus the uniform-ratio diagonal at a finer step (the
sweep a user would try by hand), is run as a trial would run it: the default
baseline (ResNet-20 on digits, from edge_tune's cache), the space's schedule
rendered for the config, the space's 3 fine-tuning epochs with its
learning-rate schedule, then ONNX export, the device's latency interleaved
against the baseline and the device's own top-1. Per-epoch PyTorch top-1 is
kept for the early-stopping study.

Phase 1 fine-tunes in ``--workers`` processes (1 torch thread each) and keeps
each model's ONNX; phase 2 measures every model on the device with nothing
else of ours running. Both phases resume from what the table already holds.

One fine-tune is a noisy judge of feasibility (the validation split has 359
images, one image is 0.28 points, and the seed moves top-1 by about a point:
docs/benchmarks/search_noise.md). ``--seeds`` fine-tunes every configuration
again with other fine-tuning seeds and keeps PyTorch top-1 per seed in
``search_table_seeds.csv`` (the device's top-1 equalled PyTorch's in all of
the table's rows, and latency depends only on the architecture, so neither is
measured again). It resumes too.
"""

from __future__ import annotations

import argparse
import csv
import functools
import itertools
import json
import multiprocessing
import os
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "docs" / "benchmarks"
TABLE = OUT / "search_table.csv"
SEEDS_TABLE = OUT / "search_table_seeds.csv"
SPACE = "filter_prune"
PARAMS = ("stage1_ratio", "stage2_ratio", "stage3_ratio")
LEVELS = (0.0, 0.18, 0.36, 0.54, 0.72, 0.9)  # per stage: the grid's values
DIAGONAL = tuple(round(0.05 * i, 2) for i in range(19))  # uniform ratios 0.0 .. 0.9
FIELDS = (
    *PARAMS,
    "top1_epochs",
    "top1",
    "top1_device",
    "speedup",
    "speedup_ci_low",
    "speedup_ci_high",
    "latency_ms",
    "baseline_latency_ms",
    "macs",
)


def configs() -> list[tuple[float, ...]]:
    grid = set(itertools.product(LEVELS, repeat=len(PARAMS)))
    grid |= {(r,) * len(PARAMS) for r in DIAGONAL}
    return sorted(grid)


@functools.cache  # once per worker process, not once per configuration
def _baseline() -> tuple[Any, Any]:
    from edge_tune.baseline import load_or_train_baseline
    from edge_tune.config import DEFAULT_CACHE
    from edge_tune.data import load_dataset
    from edge_tune.train import TrainConfig

    data = load_dataset("digits")
    return data, load_or_train_baseline("resnet20", data, TrainConfig(), DEFAULT_CACHE, print)


def finetune_one(key: tuple[float, ...], work: str, seed: int = 0) -> dict[str, Any]:
    """Prune and fine-tune one config as a trial does (fine-tuning ``seed``); the ONNX goes to ``work``."""
    import torch

    from edge_tune.compression import CompressionScheduler, parse_schedule
    from edge_tune.space import find_space
    from edge_tune.train import TrainConfig, evaluate, fine_tune, make_optimizer
    from edge_tune.trial import verify_and_export

    torch.set_num_threads(1)
    data, baseline = _baseline()
    space = find_space(SPACE)
    doc, finetune = space.render(dict(zip(PARAMS, key, strict=True)))
    cfg = replace(TrainConfig(epochs=3, lr=0.01), **finetune, seed=seed)
    model = baseline.build(data.num_classes, data.in_channels)
    example = torch.zeros(1, *data.input_shape)
    compression = CompressionScheduler(model, parse_schedule(doc), example, lambda m: make_optimizer(m, cfg))
    epochs: list[float] = []

    def epoch_end(epoch: int, loss: float, acc: Any) -> None:
        compression.on_epoch_end(epoch)
        epochs.append(round(acc.top1, 3))

    fine_tune(model, data, cfg, on_epoch_start=compression.on_epoch_start, on_epoch_end=epoch_end)
    pruned = compression.finish()
    onnx_path = Path(work, "_".join(f"{v:.2f}" for v in key) + ".onnx")
    onnx_path.write_bytes(verify_and_export(model, example))
    top1 = evaluate(model, data.val).top1
    return {"key": key, "top1_epochs": epochs, "top1": round(top1, 3), "macs": pruned.macs_after}


def _star(args: tuple[tuple[float, ...], str]) -> dict[str, Any]:
    return finetune_one(*args)


def _seeded(args: tuple[tuple[float, ...], int]) -> dict[str, Any]:
    import tempfile

    key, seed = args
    with tempfile.TemporaryDirectory() as work:
        return {**finetune_one(key, work, seed), "seed": seed}


def read_seeds(path: Path = SEEDS_TABLE) -> dict[tuple[float, ...], dict[int, float]]:
    """PyTorch top-1 of each configuration by fine-tuning seed (seed 0 is the main table's)."""
    out: dict[tuple[float, ...], dict[int, float]] = {}
    if path.exists():
        with path.open() as f:
            for r in csv.DictReader(f):
                out.setdefault(tuple(float(r[p]) for p in PARAMS), {})[int(r["seed"])] = float(r["top1"])
    return out


def extra_seeds(seeds: list[int], workers: int) -> None:
    """Every configuration fine-tuned again with each of ``seeds``; appends to SEEDS_TABLE, resuming."""
    done = read_seeds()
    todo = [(k, s) for s in seeds for k in configs() if s not in done.get(k, {})]
    print(f"{len(configs())} configs x {len(seeds)} seeds: {len(todo)} fine-tunes to run")
    new = not SEEDS_TABLE.exists()
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(workers) as pool, SEEDS_TABLE.open("a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=(*PARAMS, "seed", "top1_epochs", "top1", "macs"))
        if new:
            writer.writeheader()
        for i, r in enumerate(pool.imap_unordered(_seeded, todo), 1):
            row = {**dict(zip(PARAMS, r["key"], strict=True)), "seed": r["seed"], "top1": r["top1"]}
            writer.writerow({**row, "top1_epochs": json.dumps(r["top1_epochs"]), "macs": r["macs"]})
            f.flush()
            print(f"fine-tuned {i}/{len(todo)} {r['key']} seed {r['seed']}: top1 {r['top1']}", flush=True)


def read_table(path: Path = TABLE) -> list[dict[str, Any]]:
    """The table's rows with numbers as numbers and ``top1_epochs`` as a list."""
    if not path.exists():
        return []
    rows = []
    with path.open() as f:
        for r in csv.DictReader(f):
            rows.append(
                {k: (json.loads(v) if k == "top1_epochs" else float(v)) for k, v in r.items() if v not in ("", None)}
            )
    return rows


def measure(pending: list[dict[str, Any]], work: Path) -> None:
    """Phase 2: device latency and device top-1 of every fine-tuned model."""
    import torch

    from edge_tune.device import DeviceConfig, DeviceRunner
    from edge_tune.trial import verify_and_export

    data, baseline = _baseline()
    model = baseline.build(data.num_classes, data.in_channels)
    example = torch.zeros(1, *data.input_shape)
    runner = DeviceRunner(DeviceConfig(), verify_and_export(model, example), (data.x_val.numpy(), data.y_val.numpy()))
    new = not TABLE.exists()
    with TABLE.open("a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=FIELDS)
        if new:
            writer.writeheader()
        for i, row in enumerate(pending, 1):
            onnx = Path(work, "_".join(f"{v:.2f}" for v in row["key"]) + ".onnx").read_bytes()
            lat, acc = runner.benchmark(onnx), runner.evaluate(onnx)
            writer.writerow(
                {
                    **dict(zip(PARAMS, row["key"], strict=True)),
                    "top1_epochs": json.dumps(row["top1_epochs"]),
                    "top1": row["top1"],
                    "top1_device": round(acc.top1, 3),
                    "speedup": round(lat.speedup, 4),
                    "speedup_ci_low": round(lat.speedup_ci_low, 4),
                    "speedup_ci_high": round(lat.speedup_ci_high, 4),
                    "latency_ms": round(lat.latency_ms_p50, 4),
                    "baseline_latency_ms": round(lat.baseline_latency_ms_p50, 4),
                    "macs": row["macs"],
                }
            )
            f.flush()
            print(f"measured {i}/{len(pending)} {row['key']}: {lat.speedup:.3f}x top1 {row['top1']}", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 1)))
    p.add_argument("--work", type=Path, default=REPO / ".search_table_work", help="fine-tuned models (ONNX)")
    p.add_argument("--seeds", type=int, nargs="+", default=None, help="fine-tune every config again with these seeds")
    args = p.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    if args.seeds:
        _baseline()
        extra_seeds(args.seeds, args.workers)
        return
    args.work.mkdir(parents=True, exist_ok=True)
    _baseline()  # trained once, before the workers would race to train it
    done = {tuple(r[k] for k in PARAMS) for r in read_table()}
    todo = [k for k in configs() if k not in done]
    tuned_file = args.work / "finetuned.jsonl"
    tuned = {}
    if tuned_file.exists():
        for line in tuned_file.read_text().splitlines():
            r = json.loads(line)
            tuned[tuple(r["key"])] = r
    left = [k for k in todo if k not in tuned]
    print(f"{len(configs())} configs: {len(done)} in the table, {len(tuned)} fine-tuned, {len(left)} to fine-tune")
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(args.workers) as pool, tuned_file.open("a") as f:
        for i, r in enumerate(pool.imap_unordered(_star, [(k, str(args.work)) for k in left]), 1):
            tuned[tuple(r["key"])] = r
            f.write(json.dumps(r) + "\n")
            f.flush()
            print(f"fine-tuned {i}/{len(left)} {r['key']}: top1 {r['top1_epochs']}", flush=True)
    measure([tuned[k] for k in todo], args.work)
    print(f"table: {TABLE} ({len(read_table())} rows)")


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    main()
