"""Benchmark 5c: is the search table's best point real? Its neighbourhood fine-tuned again with other seeds.

    python benchmarks/search_noise.py [--seeds 1 2 3] [--workers 2]   # writes docs/benchmarks/search_noise.md

The table (benchmarks/search_table.py, seed 0) has its best feasible speed-up at
uniform ratio 0.8, while 0.70 and 0.75 end below the threshold. This fine-tunes
the uniform ratios around it, and the full-factorial grid's two best feasible
points, again, exactly as the table did but with other
fine-tuning seeds (data order and augmentation), and reports PyTorch top-1
per seed against the threshold. Latency depends only on the architecture, so
the table's speed-ups stand.
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

import search_table  # noqa: E402
from search_replay import Table  # noqa: E402
from search_table import read_table  # noqa: E402

# The uniform diagonal around the table's best, and the full-factorial grid's two best feasible points.
CONFIGS = ((0.7,) * 3, (0.75,) * 3, (0.8,) * 3, (0.85,) * 3, (0.72, 0.9, 0.54), (0.72, 0.72, 0.36))
OUT = REPO / "docs" / "benchmarks" / "search_noise.md"


def _one(args: tuple[tuple[float, ...], int, str]) -> tuple[tuple[float, ...], int, float]:
    key, seed, work = args
    return key, seed, search_table.finetune_one(key, work, seed)["top1"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    p.add_argument("--workers", type=int, default=2)
    args = p.parse_args()
    table = Table(read_table())
    by_key = {tuple(round(v, 2) for v in x): i for i, x in enumerate(table.x)}
    with tempfile.TemporaryDirectory() as work, multiprocessing.get_context("spawn").Pool(args.workers) as pool:
        jobs = [(c, s, work) for c in CONFIGS for s in args.seeds]
        results = pool.map(_one, jobs)
    lines = [
        "# Is the table's best point real?",
        "",
        "The uniform ratios around the table's best feasible point and the full-factorial grid's two best, "
        f"fine-tuned again (3 epochs, the table's recipe) with "
        f"seeds {', '.join(map(str, args.seeds))}; the table's own run is seed 0. Threshold "
        f"{table.threshold:.2f}% top-1; PyTorch top-1 (the table judged the lower of PyTorch and device, which "
        "agreed on these). `python benchmarks/search_noise.py`.",
        "",
        "| stage ratios | speed-up (table) | top-1 seed 0 (table) | "
        + " | ".join(f"top-1 seed {s}" for s in args.seeds)
        + " | mean of all | feasible runs |",
        "|---" * (len(args.seeds) + 5) + "|",
    ]
    for c in CONFIGS:
        i = by_key[c]
        tops = [float(table.top1[i])] + [t for cc, _, t in sorted(results) if cc == c]
        feasible = sum(t >= table.threshold for t in tops)
        lines.append(
            f"| {', '.join(f'{v:.2f}' for v in c)} | {table.speedup[i]:.3f}x | "
            + " | ".join(f"{t:.2f}" for t in tops)
            + f" | {statistics.mean(tops):.2f} | {feasible}/{len(tops)} |"
        )
    OUT.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
