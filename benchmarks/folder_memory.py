"""Peak memory of training from an image folder at 224x224: 5,000 images against 500.

    python benchmarks/folder_memory.py [--sizes 500 5000] [--steps 30] [--workers 2]

For each size, a folder of JPEG photographs-like images (smooth random colour
fields with noise, 10 classes, 160-400 pixels a side, ``train/`` and ``val/``
80/20) is written once, then a fresh process loads it as ``imagefolder`` at
224x224 and, with ``--workers`` loader processes: reads the whole training split
through the training transforms (random-resized crop and flip), as many times as it takes to read as
many images as the largest folder's training split holds (the same work, so that a longer run's chance
of catching a fuller loader pipeline does not pass for growth), trains
``mobilenet_v3_small`` for ``--steps`` batches of 32, and evaluates it on the
whole validation split. Memory is the resident set of that process and its
loader workers together (proportional set size: pages the workers share with
the process they were forked from count once), sampled every 50 ms; the peak is reported, with what
the same images would take held in memory as float32 tensors (the way the
datasets that fit are held). Writes ``docs/benchmarks/folder_memory.md`` and
``.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

OUT = Path(__file__).resolve().parent.parent / "docs" / "benchmarks"
CLASSES = 10


def write_folder(root: Path, n: int) -> None:
    """``n`` JPEG images in ``root/train/<class>`` and ``root/val/<class>`` (80/20), once."""
    import numpy as np
    from PIL import Image

    if (root / "done").exists():
        return
    rng = np.random.default_rng(n)
    for i in range(n):
        split = "val" if (i // CLASSES) % 5 == 0 else "train"
        folder = root / split / f"class{i % CLASSES}"
        folder.mkdir(parents=True, exist_ok=True)
        w, h = (int(v) for v in rng.integers(160, 401, 2))
        coarse = rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)
        im = Image.fromarray(coarse).resize((w, h), Image.Resampling.BICUBIC)
        noisy = np.clip(np.asarray(im, dtype=np.int16) + rng.integers(-12, 13, (h, w, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(noisy).save(folder / f"{i}.jpg", quality=90)
    (root / "done").write_text("")


def child(root: Path, steps: int, workers: int, read: int) -> dict:
    """Load, read, train and evaluate in this process; returns timings and the peak memory."""
    import psutil
    import torch

    from edge_tune.data import load_dataset
    from edge_tune.models import create_model
    from edge_tune.train import TrainConfig, evaluate, make_optimizer

    me = psutil.Process()
    peak = {"all": 0, "self": 0}
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            try:
                # PSS: a page shared by the process and its forked workers is counted once, split among them.
                own = me.memory_full_info().pss
                total = own + sum(c.memory_full_info().pss for c in me.children(recursive=True))
            except psutil.Error:
                continue
            peak["all"], peak["self"] = max(peak["all"], total), max(peak["self"], own)
            time.sleep(0.05)

    threading.Thread(target=sample, daemon=True).start()
    torch.manual_seed(0)
    start = time.perf_counter()
    data = load_dataset("imagefolder", root, workers=workers)
    load_s = time.perf_counter() - start
    gen = torch.Generator().manual_seed(0)
    start = time.perf_counter()
    done = 0
    while done < read:  # passes over the training split until `read` images: the same work for every size
        done += sum(len(y) for _, y in data.train.batches(64, shuffle=gen, augment=True))
    read_s = time.perf_counter() - start
    model = create_model("mobilenet_v3_small", num_classes=data.num_classes, in_channels=3)
    cfg = TrainConfig(lr=0.01, batch_size=32)
    opt = make_optimizer(model, cfg)
    model.train()
    start = time.perf_counter()
    for step, (x, y) in enumerate(data.train.batches(cfg.batch_size, shuffle=gen, augment=True)):
        if step == steps:
            break
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    train_s = time.perf_counter() - start
    start = time.perf_counter()
    acc = evaluate(model, data.val, batch_size=64)
    eval_s = time.perf_counter() - start
    stop.set()
    c, h, w = data.input_shape
    return {
        "images_train": len(data.train),
        "images_val": len(data.val),
        "input_shape": [c, h, w],
        "workers": workers,
        "load_s": load_s,
        "read_images": done,
        "read_passes": done // len(data.train),
        "read_images_per_s": done / read_s,
        "train_steps": steps,
        "train_s": train_s,
        "eval_s": eval_s,
        "top1_after_steps": acc.top1,
        "peak_pss_mib": peak["all"] / 2**20,
        "peak_pss_main_mib": peak["self"] / 2**20,
        "in_memory_float32_mib": (len(data.train) + len(data.val)) * c * h * w * 4 / 2**20,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[500, 5000])
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--work", default=os.path.join(tempfile.gettempdir(), "edge_tune_folders"))
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--read", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(Path(args.child), args.steps, args.workers, args.read)))
        return
    rows = []
    for n in args.sizes:
        root = Path(args.work) / f"folder{n}"
        write_folder(root, n)
        cmd = [sys.executable, __file__, "--child", str(root), "--steps", str(args.steps)]
        cmd += ["--read", str(max(args.sizes) * 4 // 5)]  # the largest training split, once
        out = subprocess.run([*cmd, "--workers", str(args.workers)], check=True, capture_output=True, text=True)
        row = {"images": n, **json.loads(out.stdout.strip().splitlines()[-1])}
        print(json.dumps(row), flush=True)
        rows.append(row)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "folder_memory.json").write_text(json.dumps(rows, indent=2) + "\n")
    lines = [
        "# Peak memory of training from an image folder at 224x224",
        "",
        f"Written by `python benchmarks/folder_memory.py --sizes {' '.join(map(str, args.sizes))} --steps "
        f"{args.steps} --workers {args.workers}`: per folder, one fresh process reads the training split "
        f"through the training transforms until it has read {max(args.sizes) * 4 // 5} images (one pass of the "
        "largest folder, several of a smaller one: the same work), trains `mobilenet_v3_small` for "
        f"{args.steps} batches of 32 and "
        "evaluates on the whole validation split. Peak memory of the process and its loader workers together "
        "(proportional set size, so pages the forked workers share with the process count once), sampled "
        "every 50 ms.",
        "",
        "| images (train + val) | peak PSS, process + workers | of which the process | the same images held as "
        "float32 | passes over the training split | images read per s | evaluation |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['images_train']} + {r['images_val']} | {r['peak_pss_mib']:.0f} MiB | "
            f"{r['peak_pss_main_mib']:.0f} MiB | {r['in_memory_float32_mib']:.0f} MiB | "
            f"{r['read_passes']} | {r['read_images_per_s']:.0f} | {r['eval_s']:.1f} s |"
        )
    if len(rows) >= 2:
        ratio = rows[-1]["peak_pss_mib"] / rows[0]["peak_pss_mib"]
        lines += ["", f"{rows[-1]['images']} images against {rows[0]['images']}: peak memory x{ratio:.2f}."]
    batch_mib = 64 * 3 * 224 * 224 * 4 / 2**20
    lines += [
        "",
        "What grows with the folder is only its list of file names. What varies from run to run is the "
        "workers' share: the batches in flight between the workers and the process (each worker prefetches 2 "
        f"and builds 1: with {args.workers} workers up to {3 * args.workers} batches of 64, "
        f"{3 * args.workers * batch_mib:.0f} MiB), so the peak depends on when the sampler catches the "
        "pipeline full; the process's own peak does not move.",
    ]
    (OUT / "folder_memory.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
