"""One experiment, from a search space to results: the wiring behind the CLI.

Order of work: validate everything that can be validated without Ray (space,
model, schedule, flags), train or load the baseline, check the threshold can
be reached, then start or join Ray, start the device, measure the baseline
once, and run the Tuner.
"""

from __future__ import annotations

import json
import math
import os
import signal
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from edge_tune import signals
from edge_tune.baseline import Baseline, describe, load_baseline
from edge_tune.cluster import device_cpus, ray_address, start_ray, trial_gpus
from edge_tune.compression import count_macs_params
from edge_tune.config import RUN_FILE, ExperimentConfig
from edge_tune.confirm import FINISHED, SEED_STRIDE, annotate, candidates_from_rows, next_run, resolve_reserve
from edge_tune.confirm import aim as confirm_aim
from edge_tune.contract import fit_data_to_model
from edge_tune.data import Chunks, Dataset, load_dataset
from edge_tune.device import DeviceAccuracy, DeviceConfig, LatencyResult, start_device
from edge_tune.early_stop import make_early_stopping
from edge_tune.errored import errored_callback
from edge_tune.errors import UserError
from edge_tune.finish import finish
from edge_tune.kinds import combine, gather, resource_for
from edge_tune.objective import Objective, check_reachable, parse_threshold
from edge_tune.outcome import TrialRow
from edge_tune.progress import await_device, log, progress_callback
from edge_tune.results import (
    rows_from_results,
)
from edge_tune.screen import DeviceScreen, check_screenable
from edge_tune.search import SearchSettings, make_searcher
from edge_tune.search.confirming import Confirming
from edge_tune.search.sieve import NEEDS_CONSTRAINT, use_screen
from edge_tune.space import SearchSpace
from edge_tune.tracking import resolve_mode, trial_callbacks
from edge_tune.train import TrainConfig
from edge_tune.trial import TrialContext, run_trial, verify_and_export
from edge_tune.trust import Ledger, ledger_callback

__all__ = ["OnDevice", "Prepared", "dry_run_schedule", "finetune_epochs", "prepare", "run_experiment"]


def finetune_epochs(cfg: ExperimentConfig, finetune: TrainConfig) -> int:
    """Fine-tuning epochs per trial: the flags, else the space file, else the defaults."""
    return int({**cfg.space.finetune, **cfg.finetune_overrides}.get("epochs", finetune.epochs))


def dry_run_schedule(cfg: ExperimentConfig, data: Dataset, model: torch.nn.Module, epochs: int) -> None:
    """Render the schedule at the space's midpoint and run every pruner on a throwaway copy, so that
    weight names, groups that cannot be pruned and policies beyond fine-tuning are reported before any
    trial; a thinner's ``arch``/``dataset`` that are not this run's are a warning."""
    from edge_tune.check import plan_schedule, thinner_warnings

    space = cfg.space
    plan = plan_schedule(space, space.midpoint(), model, torch.zeros(1, *data.input_shape), epochs, cfg.truncate_lr)
    for line in thinner_warnings(plan.schedule, cfg.model or space.model, data.name):
        log(f"warning: {space.path}: {line}")


@dataclass
class Prepared:
    """What is known before Ray starts: the checked inputs, the baseline and the objective."""

    cfg: ExperimentConfig
    data: Dataset
    baseline: Baseline
    objective: Objective
    finetune: TrainConfig  # defaults under the space's finetune section and the flags, seeded
    name: str  # the experiment folder's
    started: float  # time.perf_counter() when the baseline was being loaded or trained

    @property
    def space(self) -> SearchSpace:
        return self.cfg.space

    @property
    def out_dir(self) -> Path:
        return self.cfg.output_dir.resolve() / self.name


@dataclass
class OnDevice:
    """The baseline as the device measured it once: the reference of every speed-up and normalised latency."""

    actor: Any  # the EdgeDevice actor's handle
    latency: LatencyResult
    accuracy: DeviceAccuracy
    macs: int  # for one image, PyTorch
    params: int
    also: dict[str, OnDevice] = field(default_factory=dict)  # --also-device: each other kind's, by kind


def _start_kind(p: Prepared, cfg: DeviceConfig, onnx: bytes) -> tuple[Any, LatencyResult, DeviceAccuracy]:
    import ray

    device = start_device(cfg, onnx, Chunks(p.data.val))
    latency = await_device(device.benchmark.remote(onnx), f"baseline benchmark on {cfg.device}", cfg, p.cfg.quiet)
    accuracy = ray.get(device.evaluate.remote(onnx))
    log(
        f"device {cfg.device} ({latency.precision}, {cfg.threads} thread(s)): baseline "
        f"{latency.latency_ms_p50:.3f} ms p50, top1 on device {accuracy.top1:.2f}%"
    )
    return device, latency, accuracy


def run_experiment(cfg: ExperimentConfig) -> int:
    p = prepare(cfg)
    ray = start_ray(cfg, p.name)
    try:
        return _search(p, _measure_baseline(p, ray), ray)
    finally:
        ray.shutdown()


def prepare(cfg: ExperimentConfig) -> Prepared:
    """Check what can be checked without Ray, then load or train the baseline and resolve the threshold."""
    space, model_name = cfg.space, cfg.model or cfg.space.model
    data = load_dataset(cfg.dataset or space.dataset, cfg.data_dir, cfg.input_size, mean=cfg.mean, std=cfg.std)
    threshold_spec = parse_threshold(cfg.accuracy_threshold)
    finetune = replace(cfg.finetune, seed=cfg.seed)
    model, data = fit_data_to_model(model_name, data, log)
    dry_run_schedule(cfg, data, model, finetune_epochs(cfg, finetune))
    cfg.confirm = resolve_reserve(cfg.confirm, cfg.confirm_seeds, cfg.num_samples, not space.fixed)
    if cfg.searcher == "sieve" and not space.fixed:
        check_screenable(space)
        if cfg.objective != "constrained":
            raise UserError(NEEDS_CONSTRAINT)
    started = time.perf_counter()
    torch.set_num_threads(os.cpu_count() or 1)
    quiet = (lambda _: None) if cfg.quiet else log
    recipe = replace(cfg.baseline, seed=cfg.seed)
    baseline = load_baseline(model_name, data, cfg.weights, recipe, cfg.cache_dir, quiet)
    log(f"baseline {model_name} on {data.name}: top1 {baseline.accuracy.top1:.2f}% ({describe(baseline)})")
    threshold = threshold_spec.resolve(baseline.accuracy.top1)
    check_reachable(threshold, baseline.accuracy.top1, threshold_spec)
    objective = Objective(threshold, cfg.accuracy_weight, cfg.objective, cfg.latency_weight)
    name = cfg.name or f"{space.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    return Prepared(cfg, data, baseline, objective, finetune, name, started)


def _measure_baseline(p: Prepared, ray: Any) -> OnDevice:
    model = p.baseline.build(p.data.num_classes, p.data.in_channels)
    example = torch.zeros(1, *p.data.input_shape)
    onnx = verify_and_export(model, example)
    macs, params = count_macs_params(model, example)
    p.cfg.device = resource_for(p.cfg.device, ray.cluster_resources())  # a node may advertise the kind's own
    base = OnDevice(*_start_kind(p, p.cfg.device, onnx), macs, params)
    for cfg in p.cfg.also_devices:
        base.also[cfg.device] = OnDevice(*_start_kind(p, cfg, onnx), macs, params)
    log(f"threshold {p.objective.threshold:.2f}% top-1" + _speedup_of(p.cfg))
    return base


def _speedup_of(cfg: ExperimentConfig) -> str:
    if not cfg.also_devices:
        return ""
    kinds = ", ".join([cfg.device.device, *(d.device for d in cfg.also_devices)])
    if cfg.speedup_of == "target":
        return f"; every candidate measured on {kinds}, the search optimising {cfg.device.device}'s speed-up"
    return f"; every candidate measured on {kinds}, the search optimising the {cfg.speedup_of} speed-up"


def _trial_context(p: Prepared, base: OnDevice, resources: dict[str, float]) -> TrialContext:
    cfg = p.cfg
    return TrialContext(
        p.space,
        p.baseline,
        p.data.name,
        cfg.data_dir,
        cfg.input_size,
        p.data.in_channels,
        p.finetune,
        cfg.finetune_overrides,
        p.objective,
        base.macs,
        cfg.trial_cpus,
        cfg.device.actor_name,
        cfg.measure_after_finetune,
        gpus=trial_gpus(cfg.gpus_per_trial, resources, joined=ray_address(cfg) is not None),
        normalisation=(cfg.mean, cfg.std),
        truncate_lr=cfg.truncate_lr,
        experiment_dir=p.out_dir,
        target_kind=cfg.device.device,
        also_devices=tuple((d.device, d.actor_name) for d in cfg.also_devices),
        speedup_of=cfg.speedup_of,
    )


def _concurrency(cfg: ExperimentConfig, resources: dict[str, float], gpus: float) -> int:
    """Trials at once: --max-concurrent, else the CPUs beside the device, and no more than GPUs for them."""
    if cfg.max_concurrent:
        return cfg.max_concurrent
    beside = int(resources.get("CPU", 1)) - device_cpus(cfg)
    concurrent = max(1, beside // cfg.trial_cpus)
    cluster_gpus = resources.get("GPU", 0)
    return max(1, min(concurrent, int(cluster_gpus // gpus))) if gpus and cluster_gpus else concurrent


def _search(p: Prepared, base: OnDevice, ray: Any) -> int:
    cfg, space = p.cfg, p.space
    resources = ray.cluster_resources()
    ctx = _trial_context(p, base, resources)
    concurrent = _concurrency(cfg, resources, ctx.gpus)
    scheduler = make_early_stopping(cfg.early_stop, p.objective.threshold, finetune_epochs(cfg, p.finetune))
    wandb_mode = resolve_mode(cfg.wandb)
    searcher = None  # a fixed configuration: Tune's own generator runs it once
    reserve = cfg.confirm or 0
    if not space.fixed:
        search = cfg.num_samples - reserve  # the searcher's own trials; the rest confirm its candidates
        aim = confirm_aim(cfg.confirm_margin, cfg.confirm_seeds) if reserve else 0.0  # a pick must hold by it
        settings = SearchSettings(
            space.params, cfg.initial_points, cfg.seed, search, p.objective.constrained, cfg.screen, aim
        )
        searcher = make_searcher(cfg.searcher, settings)
        if reserve:
            searcher = Confirming(searcher, search, reserve, cfg.confirm_seeds, cfg.confirm_margin)
        if cfg.searcher == "sieve":  # also after --resume: the restored searcher finds it here
            actors = {cfg.device.device: base.actor, **{k: kind.actor for k, kind in base.also.items()}}

            def measure(blob: bytes) -> LatencyResult:
                measured = gather({k: actor.benchmark.remote(blob, False) for k, actor in actors.items()})
                return combine(measured, cfg.device.device, cfg.speedup_of)

            use_screen(DeviceScreen(space, p.baseline, p.data, measure, p.objective.threshold))
    tuner = _build_tuner(cfg, ctx, searcher, scheduler, concurrent, p.name, wandb_mode)
    if not cfg.resume:  # what --resume needs to rebuild this run; written before any trial
        p.out_dir.mkdir(parents=True, exist_ok=True)
        run = {"argv": cfg.argv, "space": str(space.path.resolve()), "schedule": space.schedule_file}
        (p.out_dir / RUN_FILE).write_text(json.dumps(run | {"cwd": os.getcwd()}, indent=2))
    what = "one fixed configuration" if space.fixed else f"{cfg.num_samples} trials, searcher {cfg.searcher}"
    if reserve:
        what += f" ({reserve} of them kept back to confirm candidates, {cfg.confirm_seeds} more seeds each)"
    log(
        f"searching {space.name}: {what}, {concurrent} at a time, "
        + (f"{ctx.gpus:g} GPU(s) per trial" if ctx.gpus else f"{cfg.trial_cpus} CPU(s) per trial, no GPU")
    )
    search_started = time.perf_counter()
    with signals.tuning():
        rows = rows_from_results(tuner.fit())
    # Tune saves its state once more after the callbacks' last hook: vouch for what it left.
    Ledger(p.out_dir).update(p.out_dir, deep=True)
    search_seconds = time.perf_counter() - search_started
    done = [r for r in rows if r.status != "error" or r.error != "no final result"]
    if not _complete(cfg, rows, done) or signals.received():  # Tune stopped early and kept its state
        log(
            f"interrupted{_by_signal()}: {len(done)} of {cfg.num_samples} trials finished and are kept in {p.out_dir}; "
            f"continue with: python -m edge_tune.run --resume {p.out_dir}"
        )
        return signals.exit_code()
    _, repeats, noise = annotate(rows, cfg.confirm_seeds, cfg.confirm_margin) if reserve else ([], 0, math.nan)
    experiment = _summary(p, base) | {
        "stopped_early": sum(r.status == "stopped" for r in rows),
        "wall_seconds": time.perf_counter() - p.started,
        "search_seconds": search_seconds,
        "gpus_per_trial": ctx.gpus,
    }
    experiment["confirm"]["repeats_run"] = repeats  # fewer than kept back when a candidate held early
    experiment["confirm"]["noise_sd"] = noise  # top-1 points, pooled over the candidates' runs: for the record
    wandb = (cfg.wandb_project, wandb_mode)
    return finish(p.out_dir, rows, experiment, base.actor, p.objective, list(space.params), wandb)


def _complete(cfg: ExperimentConfig, rows: list[TrialRow], done: list[TrialRow]) -> bool:
    """Every trial ran; or, under confirmation, the search's did and confirmation ended (a candidate held,
    or none was left) before its budget did."""
    if len(done) >= cfg.num_samples:
        return True
    reserve = cfg.confirm or 0
    if not reserve or sum(not r.repeat for r in done) < cfg.num_samples - reserve:
        return False
    candidates, repeats = candidates_from_rows(rows)
    return next_run(candidates, cfg.confirm_seeds, reserve - repeats, cfg.confirm_margin) == FINISHED


def _by_signal() -> str:
    sig = signals.received()
    return f" by {signal.Signals(sig).name}" if sig else ""


def _summary(p: Prepared, base: OnDevice) -> dict[str, Any]:
    """The experiment's settings and baseline, for experiment.json, best.json and W&B."""
    cfg, baseline = p.cfg, p.baseline
    return {
        "space": p.space.name,
        "model": baseline.model_name,
        "dataset": p.data.name,
        "input": {"shape": list(p.data.input_shape), "mean": list(p.data.mean), "std": list(p.data.std)},
        "threshold_top1": p.objective.threshold,
        "accuracy_weight": p.objective.accuracy_weight,
        "baseline": {
            "top1": baseline.accuracy.top1,
            "top5": baseline.accuracy.top5,
            "top1_device": base.accuracy.top1,
            "latency_ms": base.latency.latency_ms_p50,  # the reference of every normalised latency
            "latency_ms_p90": base.latency.latency_ms_p90,
            "macs": base.macs,
            "params": base.params,
            "train_seconds": baseline.train_seconds,
            "cached": baseline.cached,
            "source": baseline.source,  # trained, or weights FILE (sha256 ...)
        },
        "device": asdict(cfg.device),
        "precision": base.latency.precision,
        "also_devices": [asdict(d) for d in cfg.also_devices],
        "speedup_of": cfg.speedup_of,
        # Every kind's own baseline (the target's too), with several kinds: edge_tune.kinds
        "kinds": {
            k: {
                "latency_ms": kind.latency.latency_ms_p50,
                "latency_ms_p90": kind.latency.latency_ms_p90,
                "precision": kind.latency.precision,
                "top1_device": kind.accuracy.top1,
            }
            for k, kind in ({cfg.device.device: base, **base.also} if base.also else {}).items()
        },
        # Filled-in values only: a searched one (``${lr}``) is each trial's, in best.json and results.json.
        "finetune": {**asdict(p.finetune), **_fixed_finetune(p.space), **cfg.finetune_overrides},
        "finetune_searched": [k for k in p.space.searched_finetune() if k not in cfg.finetune_overrides],
        "searcher": cfg.searcher,
        "objective": p.objective.kind,
        "latency_weight": p.objective.latency_weight,
        "early_stop": cfg.early_stop,
        "num_samples": cfg.num_samples,
        "confirm": {
            "fine_tunes": cfg.confirm or 0,
            "seeds": cfg.confirm_seeds,
            "seed_stride": SEED_STRIDE,
            "margin_se": cfg.confirm_margin,
            # how far above the threshold Sieve aims a candidate's top-1, points (confirm.aim)
            "aim_points": confirm_aim(cfg.confirm_margin, cfg.confirm_seeds) if cfg.confirm else 0.0,
        },
        "measure_after_finetune": cfg.measure_after_finetune,
    }


def _fixed_finetune(space: SearchSpace) -> dict[str, Any]:
    """The space's ``finetune`` section with fixed values filled in and searched ones left out."""
    searched = set(space.searched_finetune())
    return {k: v for k, v in space.render(space.midpoint())[1].items() if k not in searched}


def _build_tuner(
    cfg: ExperimentConfig,
    ctx: TrialContext,
    searcher: Any,
    scheduler: Any,
    concurrent: int,
    name: str,
    wandb_mode: str,
) -> Any:
    from ray import tune
    from ray.tune.search import ConcurrencyLimiter

    storage = cfg.output_dir.resolve()
    # Tune saves its experiment state (trials, searcher) at most this often. Trials take tens of
    # seconds, so saving within a second of every event costs nothing and means a driver killed
    # with kill -9 loses at most that second: no finished trial is run again after --resume.
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "1")

    resources = {"cpu": cfg.trial_cpus, **({"gpu": ctx.gpus} if ctx.gpus else {})}
    trainable = tune.with_resources(tune.with_parameters(run_trial, ctx=ctx), resources)
    callbacks = [
        progress_callback(cfg.num_samples, cfg.device.actor_name, cfg.quiet, confirming=bool(cfg.confirm)),
        errored_callback(),
        ledger_callback(),
    ]
    if wandb_mode != "off":
        callbacks += trial_callbacks(cfg.wandb_project, name, wandb_mode)  # in this order
    if cfg.resume:
        # Finished (and errored) trials are kept as they are; unfinished ones start again. The
        # searcher comes back from the experiment folder with every observation it had.
        return tune.Tuner.restore(str(storage / name), trainable, resume_unfinished=True, resume_errored=False)
    # The searcher carries the metric ("score", max); none is given here, so that ASHA may rank by top1.
    return tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            search_alg=ConcurrencyLimiter(searcher, max_concurrent=concurrent) if searcher is not None else None,
            scheduler=scheduler,
            num_samples=cfg.num_samples,
        ),
        run_config=tune.RunConfig(
            name=name,
            storage_path=str(storage),
            verbose=0,
            callbacks=callbacks,
            failure_config=tune.FailureConfig(max_failures=0),
        ),
    )
