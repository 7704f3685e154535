"""Benchmark 5b: is Bayesian optimisation worth its trials? Searchers replayed on the table of real trials.

    python benchmarks/search_replay.py [--seeds 20]   # writes docs/benchmarks/search.md and search.json

Each searcher runs as it runs in ``edge_tune.run`` (the same Searcher classes,
the same objective, the space's 5 initial points) but a trial is a lookup:
the nearest configuration in ``docs/benchmarks/search_table.csv``
(benchmarks/search_table.py), whose top-1 (the lower of PyTorch and device)
and device speed-up were measured for real. Trials run one at a time.

A fine-tune's top-1 depends on its seed by about a point, as much as the
threshold's margin (docs/benchmarks/search_noise.md). When
``search_table_seeds.csv`` holds more fine-tuning seeds of every
configuration (``search_table.py --seeds 1 2``), the replay is noisy the way
a real search is: each trial's searcher sees the top-1 of one seed, drawn at
random, while the configuration counts as feasible, and as found, only when
its mean top-1 over all seeds clears the threshold. A lucky fine-tune of an
infeasible configuration is then no success.

Three tables: the whole table; its full-factorial grid alone (without the
finely sampled uniform diagonal); and the rows of a space with stage 1 capped
at 0.36, whose best is off the uniform diagonal.

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

from search_table import LEVELS, PARAMS, SEEDS_TABLE, TABLE, read_seeds, read_table  # noqa: E402

OUT = REPO / "docs" / "benchmarks"
BUDGETS = (8, 16, 32)
HORIZON = 32  # the largest budget; "trials to within 5%" is censored there
RANDOM_HORIZON = 64  # random search runs on, so that its trials-to-5% is measured, not censored at 32
INITIAL_POINTS = 5  # search_spaces/filter_prune.yaml
DROP = 1.0  # the default threshold: one point below the baseline


VARIANTS = {
    "all": "The whole table",
    "factorial": "The full-factorial grid alone (the uniform diagonal left out)",
    "capped": "Stage 1 capped at 0.36: the best off the uniform diagonal",
}
NOTES = {
    "capped": "The space of a user who keeps the first, narrowest stage (16 channels) at 0.36 or less: the\n"
    "table's rows within those bounds, searched over them. Its uniform diagonal, every ratio at the same\n"
    "fraction of its range, is (0.36t, 0.9t, 0.9t); its best feasible lies off it, so the sweep cannot find it.",
}
# Each stage's highest ratio in the searched space.
HIGHS = {"all": (0.9, 0.9, 0.9), "factorial": (0.9, 0.9, 0.9), "capped": (0.36, 0.9, 0.9)}


class Table:
    """The table's rows; ``top1`` is the mean over fine-tuning seeds when ``seeds`` has more of them."""

    def __init__(
        self,
        rows: list[dict[str, Any]],
        variant: str = "all",
        seeds: dict[tuple[float, ...], dict[int, float]] | None = None,
    ) -> None:
        self.highs = HIGHS[variant]
        if variant == "factorial":  # without the finely sampled uniform diagonal
            rows = [r for r in rows if all(r[p] in LEVELS for p in PARAMS)]
        rows = [r for r in rows if all(r[p] <= h + 1e-9 for p, h in zip(PARAMS, self.highs, strict=True))]
        self.x = np.array([[r[p] for p in PARAMS] for r in rows])
        # Seed 0 is the table's own fine-tune, judged by the lower of PyTorch and device top-1.
        self.samples = [[min(r["top1"], r["top1_device"])] for r in rows]
        if seeds:
            for sample, r in zip(self.samples, rows, strict=True):
                more = seeds.get(tuple(r[p] for p in PARAMS), {})
                sample += [more[k] for k in sorted(more) if k != 0]
            if len({len(s) for s in self.samples}) != 1:
                raise SystemExit("search_table_seeds.csv does not hold every configuration with every seed")
        self.top1 = np.array([float(np.mean(s)) for s in self.samples])
        self.seeds = len(self.samples[0])
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


def result(
    table: Table, i: int, rng: np.random.Generator, combined: bool = False, penalty: bool = False
) -> dict[str, float]:
    """What the searcher sees of trial ``i``: one fine-tune's top-1, of a seed drawn at random."""
    from edge_tune.objective import Objective

    obj = Objective(table.threshold, kind="combined" if combined else "constrained")
    top1, speedup = float(table.samples[i][rng.integers(table.seeds)]), float(table.speedup[i])
    score = obj.score(top1, speedup)
    if penalty and top1 < table.threshold:  # Ray's BayesOptSearch has no constraint: a penalty instead
        score = -0.1 * (table.threshold - top1) - 0.1
    return {"score": score, "constraint": obj.constraint(top1)}


def replay(table: Table, searcher: Any, budget: int, seed: int = 0, **kw: bool) -> list[float]:
    """Best feasible speed-up after each trial (1.0: none feasible yet, the baseline's).

    Feasible by the mean top-1 over seeds; ``seed`` draws which seed's fine-tune each trial shows.
    """
    rng = np.random.default_rng(10_000 + seed)  # the same draws for every searcher with this seed
    best, curve = 1.0, []
    for t in range(budget):
        config = searcher.suggest(f"t{t}")
        if config is None or not isinstance(config, dict):
            break
        i = table.lookup(config)
        searcher.on_trial_complete(f"t{t}", result(table, i, rng, **kw))
        if table.feasible[i]:
            best = max(best, float(table.speedup[i]))
        curve.append(best)
    return curve


def horizon(name: str) -> int:
    return RANDOM_HORIZON if name == "random" else HORIZON


def space(table: Table) -> dict[str, Any]:
    from edge_tune.params import Param

    return {p: Param(p, "float", 0.0, h) for p, h in zip(PARAMS, table.highs, strict=True)}


def ours(name: str, table: Table, seed: int, combined: bool = False) -> Any:
    from edge_tune.search import SearchSettings, make_searcher

    settings = SearchSettings(space(table), INITIAL_POINTS, seed, num_samples=horizon(name), constrained=not combined)
    return make_searcher(name, settings)


def load(table_path: Path, variant: str, seeds_path: Path | None) -> Table:
    return Table(read_table(table_path), variant, read_seeds(seeds_path) if seeds_path else None)


def ray_bayesopt(table: Table, seed: int) -> Any:
    from ray import tune
    from ray.tune.search.bayesopt import BayesOptSearch

    return BayesOptSearch(
        {name: tune.uniform(p.low, p.high) for name, p in space(table).items()},
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


def _job(args: tuple[str, int, str, str, str | None]) -> tuple[str, int, list[float]]:
    name, seed, table_path, variant, seeds_path = args
    table = load(Path(table_path), variant, Path(seeds_path) if seeds_path else None)
    if name == "combined":
        return name, seed, replay(table, ours("bayesopt", table, seed, combined=True), HORIZON, seed, combined=True)
    return name, seed, replay(table, ours(name, table, seed), horizon(name), seed)


def curves(
    table_path: Path, seeds: int, workers: int, variant: str, seeds_path: Path | None, names: list[str]
) -> dict[str, list[list[float]]]:
    import multiprocessing

    sp = str(seeds_path) if seeds_path else None
    jobs = [(name, seed, str(table_path), variant, sp) for name in names for seed in range(seeds)]
    out: dict[str, dict[int, list[float]]] = {name: {} for name in names}
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        for name, seed, curve in pool.imap_unordered(_job, jobs):
            out[name][seed] = curve
            print(f"{LABELS[name]} seed {seed}: best feasible {curve[-1]:.3f}x", flush=True)
    return {LABELS[name]: [runs[s] for s in range(seeds)] for name, runs in out.items()}


def sweep(table: Table) -> dict[int, float]:
    """The uniform sweep at each budget: ``budget`` evenly spaced ratios, every stage alike."""
    from edge_tune.search import UniformSweep

    return {b: replay(table, UniformSweep(space(table), n=b), b)[-1] for b in BUDGETS}  # feasibility by the mean


def within(curve: list[float], target: float, gap: float = 0.05) -> float:
    """Trials until the best feasible is within ``gap`` of the table's best; inf if never within the horizon."""
    return next((t + 1.0 for t, v in enumerate(curve) if v >= (1 - gap) * target), math.inf)


def early_stopping(table: Table, orders: int = 20) -> dict[str, dict[str, float]]:
    """Epochs saved, feasible trials wrongly stopped, and how often the best feasible trial was stopped."""
    from ray.tune.schedulers import AsyncHyperBandScheduler, TrialScheduler

    from edge_tune.early_stop import make_early_stopping

    best = int(np.argmax(np.where(table.feasible, table.speedup, -1)))
    stats: dict[str, dict[str, float]] = {}
    for kind, label in (("threshold", "threshold rule"), ("asha", "ASHA (top-1, grace 1, eta 3)")):
        saved = wrong = best_lost = total = 0
        for seed in range(orders):
            order = np.random.default_rng(seed).permutation(len(table.x))[:32]
            s: Any = make_early_stopping(kind, table.threshold, 3)
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
    p.add_argument(
        "--seeds-table",
        type=Path,
        default=SEEDS_TABLE if SEEDS_TABLE.exists() else None,
        help="more fine-tuning seeds per configuration (search_table.py --seeds); 'none': the table's seed alone",
    )
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    p.add_argument("--only", nargs="+", choices=list(LABELS), default=list(LABELS), help="searchers to replay")
    p.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS), help="tables to replay on")
    p.add_argument("--only-ray", action="store_true", help=argparse.SUPPRESS)  # the subprocess's part
    p.add_argument("--variant", choices=list(VARIANTS), default="all", help=argparse.SUPPRESS)
    args = p.parse_args()
    seeds_path = None if args.seeds_table in (None, Path("none")) else args.seeds_table
    if args.only_ray:
        table = load(args.table, args.variant, seeds_path)
        curves_ = [replay(table, ray_bayesopt(table, s), HORIZON, s, penalty=True) for s in range(args.seeds)]
        print(json.dumps(curves_))
        return
    sections = []
    for variant in args.variants:
        table = load(args.table, variant, seeds_path)
        ray_proc = None
        if args.bo1:  # Ray's wrapper in its own interpreter, beside ours
            env = {**os.environ, "PYTHONPATH": f"{args.bo1}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
            cmd = [sys.executable, __file__, "--only-ray", "--seeds", str(args.seeds), "--table", str(args.table)]
            cmd += ["--variant", variant]
            cmd += ["--seeds-table", str(seeds_path or "none")]
            ray_proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, text=True)
        results = curves(args.table, args.seeds, args.workers, variant, seeds_path, args.only)
        if ray_proc is not None:
            out, _ = ray_proc.communicate()
            if ray_proc.returncode != 0:
                raise SystemExit("Ray's BayesOptSearch replay failed")
            results["Ray BayesOptSearch, penalty (bayes_opt 1.4.3)"] = json.loads(out.strip().splitlines()[-1])
        sections.append((variant, table, results, sweep(table)))
    # Early stopping replays the table's per-epoch top-1, which only its own fine-tune (seed 0) recorded.
    # A partial run (--only, --variants) prints its tables and leaves docs/ alone.
    whole = set(args.only) == set(LABELS) and set(args.variants) == set(VARIANTS)
    write(sections, early_stopping(Table(read_table(args.table))), args.seeds, save=whole)


def _fmt(x: float, horizon: int) -> str:
    return f">{horizon}" if math.isinf(x) else f"{x:.0f}"


def _hits(runs: list[list[float]], best: float, gap: float) -> tuple[str, list[float | None]]:
    hits = np.array([within(c, best, gap) for c in runs])
    limit = max(len(c) for c in runs)
    # Censored runs (inf) sort last; the empirical quantile never interpolates across them.
    q1, med, q3 = np.percentile(hits, [25, 50, 75], method="inverted_cdf")
    reached = int(np.isfinite(hits).sum())
    cell = f"{_fmt(med, limit)} [{_fmt(q1, limit)}, {_fmt(q3, limit)}] ({reached}/{len(runs)})"
    return cell, [None if math.isinf(h) else float(h) for h in hits]


def write(sections: list[tuple[str, Table, dict, dict]], stopping: dict, seeds: int, save: bool = True) -> None:
    summary: dict[str, Any] = {
        "seeds": seeds,
        "finetune_seeds": sections[0][1].seeds,
        "tables": {},
        "early_stopping": stopping,
    }
    lines = [
        "# Is Bayesian optimisation worth its trials?",
        "",
        "Searchers replayed on a table of real `filter_prune` trials (ResNet-20 on digits, 3 fine-tuning epochs,",
        "speed-up measured on the CPU device against the baseline): `python benchmarks/search_table.py`,",
        f"then `python benchmarks/search_replay.py --seeds {seeds} --bo1 <folder>`. A trial is a lookup of the",
        "nearest configuration in `search_table.csv`; trials run one at a time; 5 initial points (random, except",
        "ConstrainedBayesOpt's first 3, which bisect the uniform diagonal for the threshold: 1/2 of every range,",
        "then 3/4 or 1/4 as the top-1 seen held or not, then 1/8 finer).",
        "Top-1 is the lower of PyTorch and device; the threshold is the fine-tuned unpruned network's - 1 point.",
        *(
            [
                "",
                f"**Noisy, as a real search is.** Every configuration was fine-tuned with {sections[0][1].seeds} seeds",
                "(`search_table.py --seeds 1 2`). A configuration is feasible when its *mean* top-1 over the",
                "seeds clears the threshold, and only feasible configurations count as found; the searcher sees",
                "the top-1 of one seed per trial, drawn at random (the same draws for every searcher in a run).",
            ]
            if sections[0][1].seeds > 1
            else []
        ),
        "",
        f'Cells: median [quartiles] over {seeds} runs (searcher seeds). "Trials to 5%" counts trials until the best',
        "feasible speed-up found is within 5% of the table's best feasible; a run that never gets there in",
        f"{HORIZON} trials ({RANDOM_HORIZON} for random search, which runs on so that its count is measured)",
        "counts as more, and (n/N) says how many of the N runs got there.",
    ]
    for key, table, results, uniform in sections:
        entry: dict[str, Any] = {
            "rows": len(table.x),
            "feasible_rows": int(table.feasible.sum()),
            "threshold_top1": table.threshold,
            "best_feasible_speedup": table.best,
            "searchers": {},
            "uniform_sweep": uniform,
        }
        summary["tables"][key] = entry
        lines += [
            "",
            f"## {VARIANTS[key]}",
            "",
            *([NOTES[key], ""] if key in NOTES else []),
            f"{len(table.x)} configurations, {int(table.feasible.sum())} feasible at {table.threshold:.2f}% top-1;",
            f"best feasible speed-up **{table.best:.3f}x**.",
            "",
            "| searcher | " + " | ".join(f"best at {b} trials" for b in BUDGETS) + " | trials to 5% | to 10% |",
            "|---" * (len(BUDGETS) + 3) + "|",
        ]
        for label, runs in results.items():
            cells, per = [], {}
            for b in BUDGETS:
                v = np.array([c[min(b, len(c)) - 1] for c in runs])
                q1, med, q3 = np.percentile(v, [25, 50, 75])
                per[b] = {"median": med, "q1": q1, "q3": q3}
                cells.append(f"{med:.3f} [{q1:.3f}, {q3:.3f}]")
            cell5, hits5 = _hits(runs, table.best, 0.05)
            cell10, hits10 = _hits(runs, table.best, 0.10)
            cells += [cell5, cell10]
            entry["searchers"][label] = {"by_budget": per, "trials_to_5pct": hits5, "trials_to_10pct": hits10}
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
        sweep_row = " | ".join(f"{uniform[b]:.3f}" for b in BUDGETS)
        lines.append(f"| uniform sweep (one ratio for all; deterministic) | {sweep_row} | - | - |")
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
    print("\n".join(lines))
    if not save:
        return
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "search.json").write_text(json.dumps(summary, indent=2, default=float))
    (OUT / "search.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
