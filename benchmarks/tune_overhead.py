"""Benchmark 6: what Ray Tune costs per trial, against a plain loop.

    python benchmarks/tune_overhead.py [--trials 24]   # writes docs/benchmarks/tune_overhead.md and .json

The same trivial trial (one ``report`` per "epoch", 3 epochs, no work) runs
``--trials`` times through the machinery ``edge_tune.run`` uses: a local Ray,
``tune.with_resources`` / ``with_parameters``, a ``ConcurrencyLimiter`` over
edge_tune's ConstrainedBayesOpt and over random search, the threshold
early-stopping scheduler, trials one at a time; and as a plain Python loop
calling the same searcher. The difference per trial is Tune's overhead: what
a trial pays before it fine-tunes anything. Ray's start-up is reported apart.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
OUT = REPO / "docs" / "benchmarks"
EPOCHS = 3


def noop_trial(config: dict[str, Any]) -> None:
    from ray import tune

    for epoch in range(1, EPOCHS + 1):
        final = epoch == EPOCHS
        top1 = 99.0 - 10 * sum(config.values()) / len(config)
        tune.report({"epoch": epoch, "epochs": EPOCHS, "top1": top1, "final": final, "score": 1.0, "constraint": 1.0})


def searcher(name: str) -> Any:
    from edge_tune.params import Param
    from edge_tune.search import SearchSettings, make_searcher

    params = {f"r{i}": Param(f"r{i}", "float", 0.0, 0.9) for i in range(3)}
    return make_searcher(name, SearchSettings(params, initial_points=5, seed=0, num_samples=10_000))


def plain(name: str, trials: int) -> float:
    s = searcher(name)
    start = time.perf_counter()
    for t in range(trials):
        config = s.suggest(str(t))
        s.on_trial_complete(str(t), {"score": 1.0 - sum(config.values()) / 10, "constraint": 1.0})
    return time.perf_counter() - start


def through_tune(name: str, trials: int, storage: str) -> float:
    from ray import tune
    from ray.tune.search import ConcurrencyLimiter

    from edge_tune.early_stop import make_early_stopping

    tuner = tune.Tuner(
        tune.with_resources(tune.with_parameters(noop_trial), {"cpu": 1}),
        tune_config=tune.TuneConfig(
            search_alg=ConcurrencyLimiter(searcher(name), max_concurrent=1),
            scheduler=make_early_stopping("threshold", 90.0, EPOCHS),
            num_samples=trials,
        ),
        run_config=tune.RunConfig(name=f"overhead-{name}", storage_path=storage, verbose=0),
    )
    start = time.perf_counter()
    tuner.fit()
    return time.perf_counter() - start


def main() -> None:
    import os

    import ray

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--trials", type=int, default=24)
    args = p.parse_args()
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "1")  # as edge_tune.run sets it
    started = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    ray_start = time.perf_counter() - started
    result: dict[str, Any] = {"trials": args.trials, "epochs": EPOCHS, "ray_start_s": ray_start, "searchers": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for name in ("random", "bayesopt"):
            loop, tuned = plain(name, args.trials), through_tune(name, args.trials, tmp)
            result["searchers"][name] = {
                "plain_loop_s_per_trial": loop / args.trials,
                "tune_s_per_trial": tuned / args.trials,
                "overhead_s_per_trial": (tuned - loop) / args.trials,
            }
    ray.shutdown()
    lines = [
        "# Ray Tune's overhead per trial",
        "",
        f"`python benchmarks/tune_overhead.py --trials {args.trials}`: a no-op trial ({EPOCHS} reports) run",
        "through the machinery `edge_tune.run` uses (local Ray, `with_resources`, `ConcurrencyLimiter`, the",
        "threshold early-stopping scheduler, experiment state saved every second) against a plain loop",
        "calling the same searcher. One trial at a time.",
        "",
        f"Ray start-up (once per run): {ray_start:.1f} s.",
        "",
        "| searcher | plain loop, s/trial | through Tune, s/trial | Tune's overhead, s/trial |",
        "|---|---|---|---|",
    ]
    for name, r in result["searchers"].items():
        lines.append(
            f"| {name} | {r['plain_loop_s_per_trial']:.3f} | {r['tune_s_per_trial']:.3f} | "
            f"{r['overhead_s_per_trial']:.3f} |"
        )
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "tune_overhead.json").write_text(json.dumps(result, indent=2))
    (OUT / "tune_overhead.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
