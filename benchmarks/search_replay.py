"""Benchmark 5b: is Bayesian optimisation worth its trials? Searchers replayed on the table of real trials.

    python benchmarks/search_replay.py [--seeds 20]   # writes docs/benchmarks/search.md and search.json

Each searcher runs as it runs in ``edge_tune.run`` (the same Searcher classes,
the same objective, the space's 5 initial points) but a trial is a lookup:
the nearest configuration in ``docs/benchmarks/search_table.csv``
(benchmarks/search_table.py), whose top-1 (the lower of PyTorch and device)
and device speed-up were measured for real. Trials run one at a time.

Compared at budgets of 8, 16 and 32 trials over ``--seeds`` seeds: edge_tune's
ConstrainedBayesOpt, Optuna's constrained TPE, random search, the uniform
sweep (deterministic: one run per budget), ConstrainedBayesOpt on the
combined (MnasNet) objective, and Ray Tune's own BayesOptSearch with the
threshold as a penalty, run in a subprocess with bayesian-optimization 1.4.3
(the last version Ray's wrapper works with; ``--bo1 PATH``, a folder holding
it, from ``pip install --target PATH --no-deps bayesian-optimization==1.4.3``).

Also replays early stopping on the table's per-epoch top-1: the threshold rule
(edge_tune.early_stop) against Ray's ASHA, over random trial orders.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from search_table import PARAMS, TABLE, read_table  # noqa: E402

OUT = REPO / "docs" / "benchmarks"
BUDGETS = (8, 16, 32)
HORIZON = 32  # the largest budget; "trials to within 5%" is censored there
INITIAL_POINTS = 5  # search_spaces/filter_prune.yaml
DROP = 1.0  # the default threshold: one point below the baseline


class Table:
    def __init__(self, rows: list[dict[str, Any]]) -> None:
        self.x = np.array([[r[p] for p in PARAMS] for r in rows])
        self.top1 = np.array([min(r["top1"], r["top1_device"]) for r in rows])
        self.speedup = np.array([r["speedup"] for r in rows])
        self.epochs = [r["top1_epochs"] for r in rows]
        base = int(np.argmin(self.x.sum(axis=1)))  # (0, 0, 0): the unpruned network, fine-tuned
        self.baseline_top1 = float(self.top1[base])
        self.threshold = self.baseline_top1 - DROP
        self.feasible = self.top1 >= self.threshold
        self.best = float(self.speedup[self.feasible].max())

    def lookup(self, config: dict[str, Any]) -> int:
        x = np.array([config[p] for p in PARAMS])
        return int(np.argmin(((self.x - x) ** 2).sum(axis=1)))


def result(table: Table, i: int, combined: bool = False, penalty: bool = False) -> dict[str, float]:
    from edge_tune.objective import Objective

    obj = Objective(table.threshold, kind="combined" if combined else "constrained")
    top1, speedup = float(table.top1[i]), float(table.speedup[i])
    score = obj.score(top1, speedup)
    if penalty and top1 < table.threshold:  # Ray's BayesOptSearch has no constraint: a penalty instead
        score = -0.1 * (table.threshold - top1) - 0.1
    return {"score": score, "constraint": obj.constraint(top1)}


def replay(table: Table, searcher: Any, budget: int, **kw: bool) -> list[float]:
    """Best feasible speed-up after each trial (1.0: none feasible yet, the baseline's)."""
    best, curve = 1.0, []
    for t in range(budget):
        config = searcher.suggest(f"t{t}")
        if config is None or not isinstance(config, dict):
            break
        i = table.lookup(config)
        searcher.on_trial_complete(f"t{t}", result(table, i, **kw))
        if table.feasible[i]:
            best = max(best, float(table.speedup[i]))
        curve.append(best)
    return curve


def ours(name: str, seed: int, combined: bool = False) -> Any:
    from edge_tune.search import make_searcher
    from edge_tune.space import Param

    params = {p: Param(p, "float", 0.0, 0.9) for p in PARAMS}
    return make_searcher(name, params, INITIAL_POINTS, seed, num_samples=HORIZON, constrained=not combined)


def ray_bayesopt(seed: int) -> Any:
    from ray import tune
    from ray.tune.search.bayesopt import BayesOptSearch

    return BayesOptSearch(
        {p: tune.uniform(0.0, 0.9) for p in PARAMS},
        metric="score",
        mode="max",
        random_search_steps=INITIAL_POINTS,
        random_state=seed,
    )


LABELS = {
    "bayesopt": "ConstrainedBayesOpt (edge_tune)",
    "optuna": "Optuna TPE, constrained",
    "random": "random",
    "combined": "ConstrainedBayesOpt, combined objective",
}


def _job(args: tuple[str, int, str]) -> tuple[str, int, list[float]]:
    name, seed, table_path = args
    table = Table(read_table(Path(table_path)))
    if name == "combined":
        return name, seed, replay(table, ours("bayesopt", seed, combined=True), HORIZON, combined=True)
    return name, seed, replay(table, ours(name, seed), HORIZON)


def curves(table_path: Path, seeds: int, workers: int) -> dict[str, list[list[float]]]:
    import multiprocessing

    jobs = [(name, seed, str(table_path)) for name in LABELS for seed in range(seeds)]
    out: dict[str, dict[int, list[float]]] = {name: {} for name in LABELS}
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        for name, seed, curve in pool.imap_unordered(_job, jobs):
            out[name][seed] = curve
            print(f"{LABELS[name]} seed {seed}: best feasible {curve[-1]:.3f}x", flush=True)
    return {LABELS[name]: [runs[s] for s in range(seeds)] for name, runs in out.items()}


def sweep(table: Table) -> dict[int, float]:
    """The uniform sweep at each budget: ``budget`` evenly spaced ratios, every stage alike."""
    from edge_tune.search import UniformSweep
    from edge_tune.space import Param

    params = {p: Param(p, "float", 0.0, 0.9) for p in PARAMS}
    return {b: replay(table, UniformSweep(params, n=b), b)[-1] for b in BUDGETS}


def within(curve: list[float], target: float) -> float:
    """Trials until the best feasible is within 5% of the table's best; inf if never within the horizon."""
    return next((t + 1.0 for t, v in enumerate(curve) if v >= 0.95 * target), math.inf)


def early_stopping(table: Table, orders: int = 20) -> dict[str, dict[str, float]]:
    """Epochs saved, feasible trials wrongly stopped, and how often the best feasible trial was stopped."""
    from ray.tune.schedulers import AsyncHyperBandScheduler, TrialScheduler

    from edge_tune.early_stop import make_scheduler

    best = int(np.argmax(np.where(table.feasible, table.speedup, -1)))
    stats: dict[str, dict[str, float]] = {}
    for kind, label in (("threshold", "threshold rule"), ("asha", "ASHA (top-1, grace 1, eta 3)")):
        saved = wrong = best_lost = total = 0
        for seed in range(orders):
            order = np.random.default_rng(seed).permutation(len(table.x))[:32]
            s: Any = make_scheduler(kind, table.threshold, 3)
            is_asha = isinstance(s, AsyncHyperBandScheduler)
            for i in order:
                # No folder: the stop reason a real trial would get in its folder is not written here.
                trial = SimpleNamespace(trial_id=f"{seed}-{i}", local_path=os.devnull + "-none", config={})
                if is_asha:
                    s.on_trial_add(None, trial)
                curve, stopped_at = table.epochs[i], None
                for e, top1 in enumerate(curve, 1):
                    if s.on_trial_result(None, trial, {"epoch": e, "epochs": 3, "top1": top1}) == TrialScheduler.STOP:
                        stopped_at = e
                        break
                total += len(curve)
                if stopped_at is not None and stopped_at < len(curve):
                    saved += len(curve) - stopped_at
                    wrong += bool(table.feasible[i])
                    best_lost += i == best
                    if is_asha:
                        s.on_trial_remove(None, trial)
                else:
                    s.on_trial_complete(None, trial, {"epoch": 3, "top1": curve[-1], "final": True})
        stats[label] = {
            "epochs_saved_pct": 100.0 * saved / total,
            "feasible_stopped_per_32": wrong / orders,
            "best_stopped_runs": float(best_lost),
        }
    return stats


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seeds", type=int, default=20)
    p.add_argument("--bo1", type=Path, default=None, help="folder with bayesian-optimization 1.4.3 (pip --target)")
    p.add_argument("--table", type=Path, default=TABLE)
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    p.add_argument("--only-ray", action="store_true", help=argparse.SUPPRESS)  # the subprocess's part
    args = p.parse_args()
    table = Table(read_table(args.table))
    if args.only_ray:
        print(json.dumps([replay(table, ray_bayesopt(s), HORIZON, penalty=True) for s in range(args.seeds)]))
        return
    ray_proc = None
    if args.bo1:  # Ray's wrapper in its own interpreter, beside ours
        env = {**os.environ, "PYTHONPATH": f"{args.bo1}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
        cmd = [sys.executable, __file__, "--only-ray", "--seeds", str(args.seeds), "--table", str(args.table)]
        ray_proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, text=True)
    results = curves(args.table, args.seeds, args.workers)
    if ray_proc is not None:
        out, _ = ray_proc.communicate()
        if ray_proc.returncode != 0:
            raise SystemExit("Ray's BayesOptSearch replay failed")
        results["Ray BayesOptSearch, penalty (bayes_opt 1.4.3)"] = json.loads(out.strip().splitlines()[-1])
    uniform = sweep(table)
    stopping = early_stopping(table)
    write(table, results, uniform, stopping, args.seeds)


def write(table: Table, results: dict, uniform: dict, stopping: dict, seeds: int) -> None:
    summary: dict[str, Any] = {
        "table_rows": len(table.x),
        "feasible_rows": int(table.feasible.sum()),
        "threshold_top1": table.threshold,
        "best_feasible_speedup": table.best,
        "seeds": seeds,
        "searchers": {},
        "uniform_sweep": uniform,
        "early_stopping": stopping,
    }
    lines = [
        "# Is Bayesian optimisation worth its trials?",
        "",
        "Searchers replayed on a table of real `filter_prune` trials (ResNet-20 on digits, 3 fine-tuning epochs,",
        "speed-up measured on the CPU device against the baseline): `python benchmarks/search_table.py`,",
        f"then `python benchmarks/search_replay.py --seeds {seeds} --bo1 <folder>`. A trial is a lookup of the",
        "nearest configuration in `search_table.csv`; trials run one at a time; 5 initial random points.",
        "",
        f"Table: {len(table.x)} configurations, {int(table.feasible.sum())} feasible at the default threshold",
        f"(baseline - 1 point = {table.threshold:.2f}% top-1, the lower of PyTorch and device).",
        f"Best feasible speed-up in the table: **{table.best:.3f}x**.",
        "",
        f"## Best feasible speed-up found: median [quartiles] over {seeds} seeds",
        "",
        "| searcher | " + " | ".join(f"{b} trials" for b in BUDGETS) + " | trials to within 5% of best: median [IQR] |",
        "|---" * (len(BUDGETS) + 2) + "|",
    ]
    for label, runs in results.items():
        cells, per = [], {}
        for b in BUDGETS:
            v = np.array([c[min(b, len(c)) - 1] for c in runs])
            q1, med, q3 = np.percentile(v, [25, 50, 75])
            per[b] = {"median": med, "q1": q1, "q3": q3}
            cells.append(f"{med:.3f} [{q1:.3f}, {q3:.3f}]")
        hits = np.array([within(c, table.best) for c in runs])
        q1, med, q3 = np.percentile(hits, [25, 50, 75])
        fmt = lambda x: f">{HORIZON}" if math.isinf(x) else f"{x:.0f}"  # noqa: E731
        reached = int(np.isfinite(hits).sum())
        cells.append(f"{fmt(med)} [{fmt(q1)}, {fmt(q3)}] ({reached}/{len(runs)} within {HORIZON})")
        summary["searchers"][label] = {"by_budget": per, "trials_to_5pct": [None if math.isinf(h) else h for h in hits]}
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines.append("| uniform sweep (one ratio for all) | " + " | ".join(f"{uniform[b]:.3f}" for b in BUDGETS) + " | - |")
    lines += [
        "",
        "## Early stopping on the table's per-epoch top-1",
        "",
        "32 trials in random order (20 orders); a stopped trial saves its remaining epochs.",
        "",
        "| rule | epochs saved | feasible trials stopped (per 32) | runs where the best feasible trial was stopped |",
        "|---|---|---|---|",
    ]
    for label, s in stopping.items():
        lines.append(
            f"| {label} | {s['epochs_saved_pct']:.1f}% | {s['feasible_stopped_per_32']:.2f} | "
            f"{s['best_stopped_runs']:.0f} of 20 |"
        )
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "search.json").write_text(json.dumps(summary, indent=2, default=float))
    (OUT / "search.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
