"""Benchmark 3: does measuring latency while the trial fine-tunes save time?

    python benchmarks/overlap.py     # writes docs/benchmarks/overlap.md and .json

Runs the same 6-trial search twice through the real CLI: the device measuring
each pruned model while the trial fine-tunes (edge_tune's order), and after
fine-tuning (the original design's order, ``--measure-after-finetune``). The
baseline is trained once beforehand, so both runs load it from the cache;
search wall time (Tuner.fit) and the device's busy fraction are compared.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "docs" / "benchmarks"
COMMON = [
    "--space",
    "filter_prune",
    "--num-samples",
    "6",
    "--epochs",
    "2",
    "--truncate-lr",  # the space's learning-rate decay is written for 3 epochs
    "--initial-points",
    "6",
    "--baseline-epochs",
    "4",
]


def run(cache: Path, out: Path, name: str, *extra: str) -> dict:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "edge_tune.run",
            *COMMON,
            "--cache-dir",
            str(cache),
            "--output-dir",
            str(out),
            "--name",
            name,
            *extra,
        ],
        cwd=REPO,
        check=False,
        capture_output=True,
    )
    return json.loads((out / name / "experiment.json").read_text())


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        cache, out = Path(tmp, "cache"), Path(tmp, "out")
        run(cache, out, "warmup", "--num-samples", "1", "--epochs", "1")  # trains the baseline once
        during = run(cache, out, "during")
        after = run(cache, out, "after", "--measure-after-finetune")
    result = {
        "trials": 6,
        "epochs": 2,
        "during": {
            "search_seconds": during["search_seconds"],
            "device_busy_fraction": during["device_stats"]["busy_fraction"],
        },
        "after": {
            "search_seconds": after["search_seconds"],
            "device_busy_fraction": after["device_stats"]["busy_fraction"],
        },
    }
    saved = after["search_seconds"] - during["search_seconds"]
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "overlap.json").write_text(json.dumps(result, indent=2))
    text = "\n".join(
        [
            "# Overlap: measuring during fine-tuning against after it",
            "",
            "`python benchmarks/overlap.py`: the same 6-trial search (2 fine-tuning epochs each, the same seed and "
            "configurations) on this 2-core machine, one trial at a time beside the device.",
            "",
            "| order | search wall time | device busy fraction |",
            "| --- | --- | --- |",
            f"| during fine-tuning (edge_tune) | {during['search_seconds']:.1f} s | "
            f"{100 * during['device_stats']['busy_fraction']:.1f} % |",
            f"| after fine-tuning (original design) | {after['search_seconds']:.1f} s | "
            f"{100 * after['device_stats']['busy_fraction']:.1f} % |",
            "",
            f"Measuring during fine-tuning saved {saved:.1f} s over 6 trials ({saved / 6:.1f} s a trial). "
            "The busy fraction is over the device actor's lifetime, baseline measurement included.",
            "",
        ]
    )
    (OUT / "overlap.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
