"""Benchmark 10a: how well the cheap accuracy proxy ranks configurations by their fine-tuned top-1.

    python benchmarks/proxy.py [--images 512]   # writes docs/benchmarks/proxy.md and .json

For every configuration of the search table (``search_table.py``: 233
configurations of ``filter_prune``, each fine-tuned 3 epochs with 3 seeds),
the default baseline is pruned to the configuration's architecture at once
(what the schedule prunes at epoch 0) and scored three ways without
training: top-1 as pruned (stale batch-norm statistics), top-1 after
re-estimating the batch norms on ``--images`` training images (the proxy,
``edge_tune/proxy.py``), and the MACs kept. Each is compared with the mean
fine-tuned top-1 of the 3 seeds by Spearman's rank correlation, over all
configurations and over those whose mean fine-tuned top-1 is within 1
point of the baseline's (where the default threshold, 1 point under it, is decided).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "benchmarks"))
OUT = REPO / "docs" / "benchmarks"


def main() -> None:
    import torch
    from scipy.stats import spearmanr
    from search_table import PARAMS, SPACE, _baseline, read_seeds, read_table

    from edge_tune.compression import CompressionScheduler, parse_schedule
    from edge_tune.proxy import proxy_top1
    from edge_tune.space import find_space
    from edge_tune.train import TrainConfig, evaluate, make_optimizer

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=512)
    ap.add_argument("--every", type=int, default=1, help="score every k-th configuration of the table only")
    args = ap.parse_args()
    torch.set_num_threads(2)
    data, baseline = _baseline()
    space, seeds = find_space(SPACE), read_seeds()
    example = torch.zeros(1, *data.input_shape)

    def optimizer(model: torch.nn.Module) -> torch.optim.Optimizer:  # never stepped: nothing is trained
        return make_optimizer(model, TrainConfig())

    rows, started = [], time.perf_counter()
    for r in read_table()[:: args.every]:
        key = tuple(r[p] for p in PARAMS)
        tuned = [r["top1"], *seeds.get(key, {}).values()]
        doc, _ = space.render(dict(zip(PARAMS, key, strict=True)))
        model = baseline.build(data.num_classes, data.in_channels)
        planned, _ = CompressionScheduler(model, parse_schedule(doc), example, optimizer).planned_model()
        t0 = time.perf_counter()
        proxy = proxy_top1(planned, data, images=args.images)
        rows.append({
            "config": key, "finetuned_mean": sum(tuned) / len(tuned), "seeds": len(tuned), "macs": r["macs"],
            "stale": evaluate(planned, data.val).top1, "proxy": proxy, "proxy_s": time.perf_counter() - t0,
        })  # fmt: skip
        print(f"{len(rows)} {key}: fine-tuned {rows[-1]['finetuned_mean']:.2f}, proxy {proxy:.2f}", flush=True)
    base = baseline.accuracy.top1
    near = [x for x in rows if x["finetuned_mean"] >= base - 1]

    def rho(subset: list[dict], key: str) -> float:
        return float(spearmanr([x[key] for x in subset], [x["finetuned_mean"] for x in subset]).statistic)

    result = {
        "images": args.images, "configs": len(rows), "near_configs": len(near), "baseline_top1": base,
        "spearman": {k: {"all": rho(rows, k), "near": rho(near, k)} for k in ("proxy", "stale", "macs")},
        "proxy_seconds_median": sorted(x["proxy_s"] for x in rows)[len(rows) // 2],
        "wall_s": time.perf_counter() - started, "rows": rows,
    }  # fmt: skip
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "proxy.json").write_text(json.dumps(result, indent=1))
    s = result["spearman"]
    lines = [
        "# The accuracy proxy against fine-tuned top-1",
        "",
        f"`python benchmarks/proxy.py --images {args.images} --every {args.every}`: {len(rows)} configurations of "
        "the search table (every one when --every is 1) "
        "(filter_prune, ResNet-20 on digits), each scored without training and compared with the mean top-1 of "
        "its 3 fine-tunes (3 epochs, seeds 0-2) by Spearman's rank correlation.",
        "",
        "| score (no training) | all configurations | within 1 point of the baseline |",
        "| --- | --- | --- |",
        f"| top-1 after re-estimating batch norms on {args.images} images (the proxy) | {s['proxy']['all']:.3f} | "
        f"{s['proxy']['near']:.3f} |",
        f"| top-1 as pruned (stale statistics) | {s['stale']['all']:.3f} | {s['stale']['near']:.3f} |",
        f"| MACs kept | {s['macs']['all']:.3f} | {s['macs']['near']:.3f} |",
        "",
        f"{len(near)} of {len(rows)} configurations are within 1 point of the baseline's {base:.2f} %. "
        f"The proxy takes {result['proxy_seconds_median']:.2f} s a configuration (median, 2 threads), "
        f"{result['wall_s'] / 60:.1f} min for all of them with the pruning.",
        "",
    ]
    (OUT / "proxy.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
