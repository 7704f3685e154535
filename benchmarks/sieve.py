"""Benchmark 10c: Sieve against the other searchers with real fine-tunes, on per-block filter pruning.

    python benchmarks/sieve.py [--datasets digits fashion-mnist] [--seeds 0 1 2 3 4] [--trials 20]
                               [--searchers sieve bayesopt optuna random grid] [--subset 3000]
    # appends to docs/benchmarks/sieve.json (a run already there is not run again), writes sieve.md
    python benchmarks/sieve.py --proxy    # the proxy of every fine-tuned configuration: sieve_proxy.json

Each search runs the searcher classes edge_tune runs (``make_searcher``, the
space's settings, ``--screen 48`` for Sieve) against real trials, one at a
time as on a two-core machine: ``filter_prune_blocks`` (ResNet-20, nine
ratios, one per block) rendered for the configuration, the space's three
fine-tuning epochs with the search's seed, PyTorch top-1 on the validation
split, and the speed-up on the device (OpenVINO CPU in this process,
interleaved against the baseline, cached by structure). Sieve screens with
the same device and the same proxy as in ``edge_tune.run``. Not here: Ray
(the same for every searcher), the device's own top-1 (equal to PyTorch's
in every row of docs/benchmarks/search_table.csv), early stopping.

Judging: a search's pick is its fastest trial whose top-1 cleared the
threshold (what best.json reports). The pick is fine-tuned again with two
more seeds; it counts only if the mean top-1 of the three clears the
threshold, otherwise the search found nothing it can ship (1.0x).

Time: a fine-tune of an architecture with a seed is done once per dataset and
reused by any search that asks for it again (the sweep's points are the same
in every seed's run), but every search is charged its full measured seconds
(fine-tune, device, screening), so ``wall`` is what the search would take.

Fashion-MNIST: the official 10,000 test images are the validation split and
the first ``--subset`` training images the training split; the baseline is
trained on them with edge_tune's recipe (cached).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
OUT = REPO / "docs" / "benchmarks"
RESULTS = OUT / "sieve.json"
SPACE = "filter_prune_blocks"
JUDGE_SEEDS = (100, 200)  # added to the search's seed for the two extra fine-tunes of its pick
PROXY_VAL_SIZES = (500, 1000, 2000)  # --proxy: validation samples the proxy is also scored on
CONFIRM_SEEDS = 2  # --confirm: repeats of each candidate, with seed + 1000 and + 2000 (edge_tune.confirm)


def load(dataset: str, subset: int) -> tuple[Any, Any]:
    import torch

    from edge_tune.baseline import load_or_train_baseline
    from edge_tune.config import DEFAULT_CACHE
    from edge_tune.data import Dataset, load_dataset
    from edge_tune.train import TrainConfig

    data = load_dataset(dataset)
    if dataset != "digits":
        data = Dataset.from_tensors(
            f"{dataset}-{subset}", data.x_train[:subset], data.y_train[:subset], data.x_val, data.y_val,
            data.num_classes,
        )  # fmt: skip
    torch.manual_seed(0)
    return data, load_or_train_baseline("resnet20", data, TrainConfig(), DEFAULT_CACHE, print)


class Bench:
    """One dataset: its baseline on the device, trials (cached by architecture and seed), the screen."""

    def __init__(self, dataset: str, subset: int) -> None:
        import torch

        from edge_tune.data import Chunks
        from edge_tune.device import DeviceConfig, DeviceRunner
        from edge_tune.objective import Objective
        from edge_tune.space import find_space
        from edge_tune.trial import verify_and_export

        self.dataset = dataset
        self.data, self.baseline = load(dataset, subset)
        self.space = find_space(SPACE)
        self.example = torch.zeros(1, *self.data.input_shape)
        base = self.baseline.build(self.data.num_classes, self.data.in_channels)
        self.runner = DeviceRunner(DeviceConfig(), verify_and_export(base, self.example), Chunks(self.data.val))
        self.threshold = self.baseline.accuracy.top1 - 1.0
        self.objective = Objective(self.threshold)
        self.trials: dict[tuple[str, int], dict[str, Any]] = {}  # (architecture, seed) -> measured trial

    def trial(self, config: dict[str, Any], seed: int) -> dict[str, Any]:
        """Prune, fine-tune and measure ``config`` as a trial does; cached, with its measured seconds."""
        from edge_tune.compression import CompressionScheduler, parse_schedule
        from edge_tune.screen import architecture
        from edge_tune.train import TrainConfig, evaluate, fine_tune, make_optimizer
        from edge_tune.trial import verify_and_export

        started = time.perf_counter()
        doc, finetune = self.space.render(config)
        schedule = parse_schedule(doc)
        cfg = replace(TrainConfig(epochs=3, lr=0.01), **finetune, seed=seed)
        model = self.baseline.build(self.data.num_classes, self.data.in_channels)
        compression = CompressionScheduler(model, schedule, self.example, lambda m: make_optimizer(m, cfg))
        planned, _ = compression.planned_model()
        key = (json.dumps(architecture(planned)), seed)
        if key in self.trials:
            return self.trials[key]
        fine_tune(
            model, self.data, cfg, on_epoch_start=compression.on_epoch_start,
            on_epoch_end=lambda e, *_: compression.on_epoch_end(e),
        )  # fmt: skip
        compression.finish()
        top1 = evaluate(model, self.data.val).top1
        speedup = self.runner.benchmark(verify_and_export(model, self.example), profile=False).speedup
        self.trials[key] = {"top1": top1, "speedup": speedup, "seconds": time.perf_counter() - started}
        return self.trials[key]

    def search(self, name: str, seed: int, trials: int, confirm: int = 0, margin: float = 0.0) -> dict[str, Any]:
        from edge_tune.confirm import SEED_STRIDE, aim, config_key, held
        from edge_tune.outcome import REPEAT
        from edge_tune.screen import DeviceScreen
        from edge_tune.search import SearchSettings, make_searcher
        from edge_tune.search.confirming import Confirming
        from edge_tune.search.sieve import use_screen

        target = aim(margin, CONFIRM_SEEDS) if confirm else 0.0  # as edge_tune.run gives it
        settings = SearchSettings(
            self.space.params, self.space.search.get("initial_points", 4), seed, trials - confirm, screen=48,
            aim=target,
        )  # fmt: skip
        screen = None
        if name == "sieve":
            screen = DeviceScreen(
                self.space, self.baseline, self.data, lambda b: self.runner.benchmark(b, profile=False),
                self.threshold,
            )  # fmt: skip
            use_screen(screen)
        searcher = make_searcher(name, settings)
        if confirm:
            searcher = Confirming(searcher, trials - confirm, confirm, CONFIRM_SEEDS, margin)
        rows, charged, spent = [], 0.0, time.perf_counter()
        for t in range(trials):
            suggest_started = time.perf_counter()
            config = searcher.suggest(str(t))
            charged += time.perf_counter() - suggest_started  # screening and the searcher's own work
            if not isinstance(config, dict):
                break
            r = self.trial(config, seed + SEED_STRIDE * config.get(REPEAT, 0))
            charged += r["seconds"]
            result = {
                "score": self.objective.score(r["top1"], r["speedup"]),
                "constraint": self.objective.constraint(r["top1"]),
                "feasible": r["top1"] >= self.threshold,
                "final": True,
            }
            searcher.on_trial_complete(str(t), result)
            rows.append({"config": config, **r})
            print(f"  {name} seed {seed} trial {t + 1}: {r['speedup']:.3f}x top-1 {r['top1']:.2f}", flush=True)
        use_screen(None)
        search = [(r["speedup"], i) for i, r in enumerate(rows) if REPEAT not in r["config"]]
        feasible = [(v, i) for v, i in search if rows[i]["top1"] >= self.threshold]
        if confirm:  # the fastest candidate that held, else the fastest one never repeated (the budget ran out)
            holding = held(searcher.candidates, CONFIRM_SEEDS, margin)
            tried = {c.key for c in searcher.candidates if c.issued}
            keys = [config_key(rows[i]["config"]) for _, i in feasible]
            if holding:
                feasible = [f for f, k in zip(feasible, keys, strict=True) if k == holding[0].key]
            else:
                feasible = [f for f, k in zip(feasible, keys, strict=True) if k not in tried]
        run: dict[str, Any] = {
            "dataset": self.dataset, "searcher": name, "seed": seed, "trials": len(rows), "confirm": confirm,
            "margin": margin, "aim": target if name == "sieve" else 0.0,
            "threshold": self.threshold, "baseline_top1": self.baseline.accuracy.top1,
            "rows": rows, "screened": screen.calls if screen else 0,
            "screen_seconds": screen.seconds if screen else 0.0, "proxy_val": len(screen.val) if screen else 0,
        }  # fmt: skip
        if feasible:
            speedup, i = max(feasible)
            judged = [rows[i]["top1"]]
            for extra in JUDGE_SEEDS:
                again = self.trial(rows[i]["config"], seed + extra)
                judged.append(again["top1"])
            run |= {"pick": i, "pick_speedup": speedup, "judged_top1": judged}
            run["holds"] = statistics.mean(judged) >= self.threshold
        else:
            run |= {"pick": None, "pick_speedup": 1.0, "judged_top1": [], "holds": False}
        run["best"] = run["pick_speedup"] if run["holds"] else 1.0
        run["wall_s"] = charged
        run["elapsed_s"] = time.perf_counter() - spent
        return run


def proxies(runs: list[dict[str, Any]], subset: int, datasets: list[str]) -> dict[str, Any]:
    """The accuracy proxy of every distinct configuration the runs fine-tuned, against its fine-tuned top-1
    (the mean over every seed that fine-tuned it), by Spearman's rank correlation, per dataset: scored on
    the whole validation split and on the class-stratified samples of ``PROXY_VAL_SIZES`` images (the
    screen's is ``edge_tune.screen.PROXY_VAL_IMAGES``), with the seconds each candidate's proxy took."""
    import torch
    from scipy.stats import spearmanr

    from edge_tune.compression import CompressionScheduler, parse_schedule
    from edge_tune.proxy import proxy_top1, validation_sample
    from edge_tune.screen import PROXY_IMAGES, PROXY_VAL_IMAGES
    from edge_tune.space import find_space
    from edge_tune.train import TrainConfig, make_optimizer

    space, out = find_space(SPACE), {}
    for dataset in sorted({r["dataset"] for r in runs} & set(datasets)):
        data, baseline = load(dataset, subset)
        vals = {len(data.val): data.val} | {
            n: validation_sample(data.val, n) for n in PROXY_VAL_SIZES if n < len(data.val)
        }  # fmt: skip
        tuned: dict[str, list[float]] = {}
        for r in (r for r in runs if r["dataset"] == dataset):
            for row in r["rows"]:
                tuned.setdefault(json.dumps(row["config"], sort_keys=True), []).append(row["top1"])
        screen = min(PROXY_VAL_IMAGES, len(data.val))  # the sample the screen scores on
        rows, seconds = [], dict.fromkeys(vals, 0.0)
        for config, top1 in tuned.items():
            model = baseline.build(data.num_classes, data.in_channels)
            example = torch.zeros(1, *data.input_shape)
            schedule = parse_schedule(space.render(json.loads(config))[0])
            planned, _ = CompressionScheduler(
                model, schedule, example, lambda m: make_optimizer(m, TrainConfig())
            ).planned_model()
            row: dict[str, Any] = {"config": config, "finetuned": statistics.mean(top1), "proxy_by_val": {}}
            for n, val in vals.items():
                started = time.perf_counter()
                row["proxy_by_val"][str(n)] = proxy_top1(planned, data, PROXY_IMAGES, val=val)
                seconds[n] += time.perf_counter() - started
            row["proxy"] = row["proxy_by_val"][str(screen)]
            rows.append(row)
        near = [x for x in rows if x["finetuned"] >= baseline.accuracy.top1 - 1.0]

        def rho(xs: list[dict[str, Any]], n: int) -> float:
            return float(spearmanr([x["proxy_by_val"][str(n)] for x in xs], [x["finetuned"] for x in xs]).statistic)

        by_val = {
            str(n): {"all": rho(rows, n), "near_rho": rho(near, n), "seconds_each": seconds[n] / len(rows)}
            for n in vals
        }  # fmt: skip
        out[dataset] = {
            "configs": len(rows), "near": len(near), "val_images": screen, "all": rho(rows, screen),
            "near_rho": rho(near, screen), "by_val": by_val, "rows": rows,
        }  # fmt: skip
        for n, b in by_val.items():
            print(
                f"{dataset}: proxy on {n} validation images against fine-tuned top-1 over {len(rows)} "
                f"configurations: {b['all']:.3f} ({b['near_rho']:.3f} near), {b['seconds_each']:.2f} s each"
            )
    return out


def _label(run: dict[str, Any]) -> tuple[str, str, int, float]:
    """(dataset, searcher, fine-tunes kept back for confirmation, its margin): runs compared side by side.
    Runs from before the margin was recorded had none; Sieve runs from before it aimed above the threshold,
    or whose proxy was scored on more validation images than the screen's sample, are told apart from the
    others (``_searcher``)."""
    confirm = int(run.get("confirm", 0))
    searcher = _searcher(run["searcher"], float(run.get("aim", 0.0)), int(run.get("proxy_val", 0)))
    return run["dataset"], searcher, confirm, float(run.get("margin", 0.0)) if confirm else 0.0


def _searcher(name: str, aim: float, proxy_val: int = 0) -> str:
    """A searcher's name in the tables: Sieve with the points above the threshold it aimed at, if any, and
    the validation images its proxy was scored on where that was more than the screen scores on now."""
    from edge_tune.screen import PROXY_VAL_IMAGES

    named = f"{name} aiming +{aim:.2f}" if aim else name
    return f"{named}, proxy on {proxy_val} images" if proxy_val > PROXY_VAL_IMAGES else named


def _name(searcher: str, confirm: int, margin: float) -> str:
    return f"{searcher} + confirm {confirm} (margin {margin:g} SE)" if confirm else searcher


def summary(runs: list[dict[str, Any]]) -> str:
    lines = [
        "# Sieve against the other searchers, with real fine-tunes",
        "",
        "`python benchmarks/sieve.py` (see its docstring for the protocol): filter_prune_blocks on ResNet-20, "
        "threshold 1 point under the baseline, 20 fine-tunes a search, each search's pick fine-tuned again with "
        "two more seeds (it counts only if the mean of the three clears the threshold). Raw: `sieve.json`.",
        "",
        "| dataset | searcher | runs (seeds) | median best feasible speed-up | picks that held | "
        "median trials to its pick | median wall (device and screening included) |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    keys = sorted({_label(r) for r in runs})
    for dataset, name, confirm, margin in keys:
        rs = [r for r in runs if _label(r) == (dataset, name, confirm, margin)]
        best = statistics.median(r["best"] for r in rs)
        held = sum(r["holds"] for r in rs)
        to_pick = [r["pick"] + 1 for r in rs if r["pick"] is not None]
        lines.append(
            f"| {dataset} | {_name(name, confirm, margin)} | {len(rs)} ({', '.join(str(r['seed']) for r in rs)}) | "
            f"{best:.3f}x | "
            f"{held}/{len(rs)} | {statistics.median(to_pick) if to_pick else math.nan:g} | "
            f"{statistics.median(r['wall_s'] for r in rs) / 60:.1f} min |"
        )
    lines += [
        "",
        "Per run: its pick (the fastest trial whose top-1 cleared the threshold), the pick's top-1 in the search "
        "and with the two judging seeds, whether their mean held, and the run's wall time.",
        "",
        "| dataset | searcher | seed | threshold | pick | its top-1: search, judges | held | wall |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for dataset, name, confirm, margin in keys:
        for r in (r for r in runs if _label(r) == (dataset, name, confirm, margin)):
            pick = f"trial {r['pick'] + 1}, {r['pick_speedup']:.3f}x" if r["pick"] is not None else "none"
            top1 = ", ".join(f"{t:.2f}" for t in r["judged_top1"]) or "-"
            lines.append(
                f"| {dataset} | {_name(name, confirm, margin)} | {r['seed']} | {r['threshold']:.2f} | {pick} | "
                f"{top1} | {'yes' if r['holds'] else 'no'} | {r['wall_s'] / 60:.1f} min |"
            )
    proxy_file = OUT / "sieve_proxy.json"
    if proxy_file.exists():
        lines += ["", "The accuracy proxy (batch norms re-estimated on 256 training images) against fine-tuned "
                  "top-1 over the configurations these runs fine-tuned (Spearman; `python benchmarks/sieve.py "
                  "--proxy`, `sieve_proxy.json`):", ""]  # fmt: skip
        for dataset, p in json.loads(proxy_file.read_text()).items():
            lines.append(
                f"- {dataset}: {p['all']:.3f} over {p['configs']} configurations; {p['near_rho']:.3f} over the "
                f"{p['near']} within a point of the baseline"
            )
            for n, b in sorted(p.get("by_val", {}).items(), key=lambda nb: int(nb[0])):
                lines.append(
                    f"  - scored on {n} validation images{' (the screen)' if int(n) == p['val_images'] else ''}: "
                    f"{b['all']:.3f}, {b['near_rho']:.3f} near, {b['seconds_each']:.2f} s a candidate"
                )
    reading = OUT / "sieve_reading.md"  # written by hand from the tables above; kept when they are rewritten
    if reading.exists():
        lines += ["", reading.read_text().rstrip()]
    return "\n".join(lines) + "\n"


def main() -> None:
    import torch

    from edge_tune.confirm import MARGIN, aim

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", nargs="+", default=["digits", "fashion-mnist"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    ap.add_argument("--searchers", nargs="+", default=["sieve", "bayesopt", "optuna", "random", "grid"])
    ap.add_argument("--trials", type=int, default=20)
    ap.add_argument("--subset", type=int, default=3000, help="Fashion-MNIST training images")
    ap.add_argument("--confirm", type=int, default=0, help="fine-tunes of --trials kept back for confirmation")
    ap.add_argument("--confirm-margin", type=float, default=MARGIN, help="standard errors a candidate must hold by")
    ap.add_argument("--proxy", action="store_true", help="only the proxy over the configurations fine-tuned so far")
    args = ap.parse_args()
    torch.set_num_threads(2)
    runs = json.loads(RESULTS.read_text()) if RESULTS.exists() else []
    if args.proxy:
        proxy_file = OUT / "sieve_proxy.json"
        kept = json.loads(proxy_file.read_text()) if proxy_file.exists() else {}
        proxy_file.write_text(json.dumps(kept | proxies(runs, args.subset, args.datasets), indent=1))
        (OUT / "sieve.md").write_text(summary(runs))
        return
    for dataset in args.datasets:
        bench = None
        for seed in args.seeds:
            for name in args.searchers:
                target = aim(args.confirm_margin, CONFIRM_SEEDS) if args.confirm and name == "sieve" else 0.0
                label = (dataset, _searcher(name, target), args.confirm, args.confirm_margin if args.confirm else 0.0)
                if any(_label(r) == label and r["seed"] == seed for r in runs):
                    continue
                bench = bench or Bench(dataset, args.subset)
                print(f"{dataset}: {name}, seed {seed}, confirm {args.confirm} ({label[3]:g} SE)", flush=True)
                runs.append(bench.search(name, seed, args.trials, args.confirm, args.confirm_margin))
                OUT.mkdir(parents=True, exist_ok=True)
                RESULTS.write_text(json.dumps(runs, indent=1))
                (OUT / "sieve.md").write_text(summary(runs))
        if bench is not None:
            bench.runner.close()
    print(summary(runs))


if __name__ == "__main__":
    main()
