"""One experiment, from a search space to results: the wiring behind the CLI.

Order of work: validate everything that can be validated without Ray (space,
model, schedule, flags), train or load the baseline, check the threshold can
be reached, then start or join Ray, start the device, measure the baseline
once, and run the Tuner.
"""

from __future__ import annotations

import copy
import json
import math
import os
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from edge_tune.compression import apply_pruners, check_schedule_fits, count_macs_params, parse_schedule
from edge_tune.data import Dataset, load_dataset
from edge_tune.device import DeviceConfig, start_device
from edge_tune.early_stop import make_scheduler
from edge_tune.errors import UserError
from edge_tune.objective import Objective, check_reachable, parse_threshold
from edge_tune.report import write_report
from edge_tune.results import (
    closest_infeasible,
    format_layers,
    format_table,
    pareto_front,
    rank,
    rows_from_results,
    write_outputs,
)
from edge_tune.search import make_searcher
from edge_tune.space import SearchSpace
from edge_tune.tracking import log_summary, resolve_mode, trial_callbacks
from edge_tune.train import Baseline, TrainConfig, load_or_train_baseline
from edge_tune.trial import TrialContext, run_trial, verify_and_export

__all__ = ["ExperimentConfig", "run_experiment"]

EXIT_OK, EXIT_NO_FEASIBLE, EXIT_INTERRUPTED = 0, 3, 130


RUN_FILE = "edge_tune_run.json"  # in the experiment folder: the command line, for --resume
DEFAULT_CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "edge_tune"  # baselines live here


@dataclass
class ExperimentConfig:
    space: SearchSpace
    model: str = ""  # zoo name or package.module:function; "" = the space file's
    dataset: str = ""  # digits | cifar10 | cifar100 | imagefolder; "" = the space file's
    data_dir: Path | None = None  # where cifar10/cifar100/imagefolder live (--data-dir)
    accuracy_threshold: str = "-1.0"  # "97.5" = top-1 >= 97.5%; "-1.0" = at most 1 point below baseline
    accuracy_weight: float = 1.0  # score per 100 accuracy points beside ln(speedup)
    objective: str = "constrained"  # constrained | combined (see objective.py)
    latency_weight: float = 0.07  # combined: the exponent of the speed-up
    early_stop: str = "threshold"  # threshold | asha | none (see early_stop.py)
    num_samples: int = 16  # trials
    max_concurrent: int = 0  # trials at once; 0 = as many as the CPUs left beside the device allow
    initial_points: int = 4  # random trials before the Gaussian process proposes
    searcher: str = "bayesopt"  # bayesopt | optuna | random | grid
    seed: int = 0  # searcher, baseline training, fine-tuning
    baseline: TrainConfig = field(default_factory=TrainConfig)  # baseline training recipe
    finetune: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=3, lr=0.01))  # under the space's
    finetune_overrides: dict[str, Any] = field(default_factory=dict)  # flags; over the space's finetune section
    device: DeviceConfig = field(default_factory=DeviceConfig)
    trial_cpus: int = 1  # CPUs (torch threads) per trial
    gpus_per_trial: str = "auto"  # GPUs per trial: a number, or auto (1 when the cluster has GPUs, else 0)
    measure_after_finetune: bool = False  # benchmark after fine-tuning instead of during it (slower)
    resume: bool = False  # continue the experiment output_dir/name: finished trials are kept, not re-run
    argv: list[str] = field(default_factory=list)  # the command line, saved so --resume can rebuild this config
    address: str | None = None  # Ray cluster to join; None starts a local one
    output_dir: Path = Path("edge_tune_results")  # experiments are folders in here
    name: str = ""  # experiment folder; default: <space>-<date>-<time>
    cache_dir: Path = field(default_factory=lambda: DEFAULT_CACHE)  # baselines
    wandb: str = "auto"  # auto | offline | online | off (see tracking.py)
    wandb_project: str = "edge_tune"
    quiet: bool = False  # no per-trial, status or baseline-epoch lines


def _log(msg: str) -> None:
    print(f"[edge_tune] {msg}", flush=True)


def finetune_epochs(cfg: ExperimentConfig, finetune: TrainConfig) -> int:
    """Fine-tuning epochs per trial: the flags, else the space file, else the defaults."""
    return int({**cfg.space.finetune, **cfg.finetune_overrides}.get("epochs", finetune.epochs))


def dry_run_schedule(space: SearchSpace, data: Dataset, model: torch.nn.Module, epochs: int) -> None:
    """Render the schedule at the space's midpoint and run every pruner on a throwaway copy, so that
    weight names, groups that cannot be pruned and policies beyond fine-tuning are reported before any trial."""
    schedule = parse_schedule(space.render(space.midpoint())[0])
    try:
        check_schedule_fits(schedule, epochs)
        apply_pruners(copy.deepcopy(model), list(schedule.pruners.values()), torch.zeros(1, *data.input_shape))
    except ValueError as exc:
        raise UserError(f"{space.path}: {exc}") from exc


def trial_gpus(flag: str, cluster: dict[str, float], joined: bool) -> float:
    """GPUs per trial from ``--gpus-per-trial``: auto is 1 when the cluster has a GPU now, else 0.

    A number asks for that many whatever the cluster has now: an autoscaling
    cluster (cluster.yaml) adds GPU workers when trials ask for GPUs. On the
    local cluster this run starts, asking for more than it has is an error.
    """
    if flag == "auto":
        return 1.0 if cluster.get("GPU", 0) >= 1 else 0.0
    try:
        gpus = float(flag)
    except ValueError:
        gpus = -1.0
    if not (gpus >= 0 and math.isfinite(gpus)):
        raise UserError(f"--gpus-per-trial {flag}: give auto or a number of GPUs (0, 0.5, 1, ...)")
    if gpus and not joined and cluster.get("GPU", 0) < gpus:
        raise UserError(
            f"--gpus-per-trial {flag}: the local Ray cluster has {cluster.get('GPU', 0):g} GPU(s); "
            "use --gpus-per-trial 0 (or auto), or join a cluster with GPUs with --address"
        )
    return gpus


def ray_address(cfg: ExperimentConfig) -> str | None:
    """The cluster to join (--address, else RAY_ADDRESS, as under ``ray job submit``); None: start one."""
    return cfg.address or os.environ.get("RAY_ADDRESS") or None


def start_ray(cfg: ExperimentConfig, name: str = "") -> Any:
    """Join the cluster at --address (or RAY_ADDRESS), or start a local one with the dashboard.

    The driver's Ray job carries the experiment's name in its metadata
    (``edge_tune_experiment``), which the dashboard's Jobs page shows.
    """
    import ray
    from ray.job_config import JobConfig

    address = ray_address(cfg)
    job = JobConfig(metadata={"edge_tune_experiment": name, "edge_tune_space": cfg.space.name})
    if address:
        ctx = ray.init(address=address, namespace="edge_tune", log_to_driver=False, job_config=job)
    else:
        cpus = max(os.cpu_count() or 1, cfg.device.threads + cfg.trial_cpus)
        ctx = ray.init(
            num_cpus=cpus,
            resources={cfg.device.resource: 1},
            namespace="edge_tune",
            include_dashboard=True,
            dashboard_host="127.0.0.1",
            log_to_driver=False,
            job_config=job,
        )
    url = getattr(ctx, "dashboard_url", None)
    token = os.environ.get("RAY_AUTH_MODE") == "token"  # Ray's default for a new local cluster
    _log(
        f"Ray {'joined at ' + address if address else 'started locally'}; dashboard: "
        f"{'http://' + url if url and not url.startswith('http') else url or 'not available'}"
        + (" (sign in with the token in ~/.ray/auth_token)" if token and url else "")
        + ("; on a cluster launched with cluster.yaml, `ray dashboard cluster.yaml` forwards it" if address else "")
    )
    return ray


def await_device(ref: Any, what: str, device: DeviceConfig, quiet: bool, every_s: float = 5.0) -> Any:
    """``ray.get(ref)``, with a progress bar every ``every_s`` seconds once the device job takes longer.

    The bar runs against the timing plan's cap: timing stops there at the
    latest, or earlier once the speed-up's confidence interval is narrow.
    """
    import ray

    start, shown = time.perf_counter(), 0
    cap = device.timing.time_cap_s
    while not ray.wait([ref], timeout=0.5)[0]:
        elapsed = time.perf_counter() - start
        if not quiet and elapsed >= every_s * (shown + 1):
            shown += 1
            _log(
                f"  {what} [{'#' * round(20 * min(elapsed / cap, 1.0)):20}] {elapsed:.0f}s; timing stops by "
                f"{cap:.0f}s, or once the speed-up's 95% CI is within {100 * device.timing.target_ci:g}%"
            )
    return ray.get(ref)


def _progress_callback(total: int, device_actor: str, quiet: bool, every_s: float = 15.0) -> Any:
    import ray
    from ray.tune import Callback

    from edge_tune.device import get_device

    class Progress(Callback):
        """A line per finished trial and, every ``every_s`` seconds when it changed, a status line: trials
        done, running and queued, the device's queue and the best feasible speed-up so far. Tune's own
        tables are off. ``quiet``: none of it."""

        def __init__(self) -> None:
            self.done = 0
            self.best: tuple[float, str] | None = None
            self.last, self.line = 0.0, ""
            self.queue: int | None = None
            self.job = ""  # what the device is doing, when a benchmark or evaluation has run for a while
            self.queue_ref: Any = None

        def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
            now = time.monotonic()
            if quiet or now - self.last < every_s:
                return
            self.last = now
            if self.queue_ref is not None and ray.wait([self.queue_ref], timeout=0)[0]:
                state, self.queue_ref = ray.get(self.queue_ref), None
                self.queue = state["queue_length"]
                slow = state.get("job") and state.get("job_seconds", 0) >= 5
                self.job = f" (running a {state['job']} for {state['job_seconds']:.0f}s)" if slow else ""
            if self.queue_ref is None:  # asked now, read at a later step: the driver never waits on the device
                self.queue_ref = get_device(device_actor).info.remote()
            running = sum(t.status == "RUNNING" for t in trials)
            queued = total - len(trials) + sum(t.status == "PENDING" for t in trials)
            best = f"{self.best[0]:.3f}x ({self.best[1]})" if self.best else "none yet"
            line = (
                f"status: {self.done}/{total} trials done, {running} running, {queued} queued; device queue "
                f"{'?' if self.queue is None else self.queue}{self.job}; best feasible speedup {best}"
            )
            if line != self.line:
                self.line = line
                _log(line)

        def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            self.done += 1
            m = trial.last_result or {}
            if m.get("final") and m.get("feasible") and (self.best is None or m["speedup"] > self.best[0]):
                self.best = (float(m["speedup"]), trial.trial_id)
            if quiet:
                return
            if not m.get("final"):
                _log(
                    f"trial {self.done}/{total} {trial.trial_id}: stopped early after epoch {m.get('epoch')}, "
                    f"top1 {m.get('top1', float('nan')):.2f}%"
                )
                return
            _log(
                f"trial {self.done}/{total} {trial.trial_id}: speedup {m.get('speedup', float('nan')):.3f}x, "
                f"top1 {m.get('top1', float('nan')):.2f}% (device {m.get('top1_device', float('nan')):.2f}%), "
                f"{'feasible' if m.get('feasible') else 'infeasible'}; "
                + ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in trial.config.items())
            )

        def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            self.done += 1
            _log(f"trial {self.done}/{total} {trial.trial_id}: errored, the search goes on ({trial.error_file})")

    return Progress()


def run_experiment(cfg: ExperimentConfig) -> int:
    space = cfg.space
    model_name = cfg.model or space.model
    data = load_dataset(cfg.dataset or space.dataset, cfg.data_dir)
    threshold_spec = parse_threshold(cfg.accuracy_threshold)
    finetune = replace(cfg.finetune, seed=cfg.seed)
    from edge_tune.models import create_model

    epochs = finetune_epochs(cfg, finetune)
    model = create_model(model_name, num_classes=data.num_classes, in_channels=data.in_channels)
    dry_run_schedule(space, data, model, epochs)
    started = time.perf_counter()
    torch.set_num_threads(os.cpu_count() or 1)
    baseline = load_or_train_baseline(
        model_name, data, replace(cfg.baseline, seed=cfg.seed), cfg.cache_dir, (lambda _: None) if cfg.quiet else _log
    )
    _log(
        f"baseline {model_name} on {data.name}: top1 {baseline.accuracy.top1:.2f}% "
        f"({'cached' if baseline.cached else f'trained in {baseline.train_seconds:.0f}s'})"
    )
    threshold = threshold_spec.resolve(baseline.accuracy.top1)
    check_reachable(threshold, baseline.accuracy.top1, threshold_spec)
    objective = Objective(threshold, cfg.accuracy_weight, cfg.objective, cfg.latency_weight)
    name = cfg.name or f"{space.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    ray = start_ray(cfg, name)
    try:
        return _search(cfg, space, data, baseline, objective, finetune, started, ray, name)
    finally:
        ray.shutdown()


def _search(
    cfg: ExperimentConfig,
    space: SearchSpace,
    data: Dataset,
    baseline: Baseline,
    objective: Objective,
    finetune: TrainConfig,
    started: float,
    ray: Any,
    name: str,
) -> int:
    model = baseline.build(data.num_classes, data.in_channels)
    example = torch.zeros(1, *data.input_shape)
    onnx = verify_and_export(model, example)
    macs, params = count_macs_params(model, example)
    device = start_device(cfg.device, onnx, (data.x_val.numpy(), data.y_val.numpy()))
    base_latency = await_device(device.benchmark.remote(onnx), "baseline benchmark", cfg.device, cfg.quiet)
    base_device = ray.get(device.evaluate.remote(onnx))
    _log(
        f"device {cfg.device.device} ({base_latency.precision}, {cfg.device.threads} thread(s)): baseline "
        f"{base_latency.latency_ms_p50:.3f} ms p50, top1 on device {base_device.top1:.2f}%; "
        f"threshold {objective.threshold:.2f}% top-1"
    )
    resources = ray.cluster_resources()
    ctx = TrialContext(
        space,
        baseline,
        data.name,
        cfg.data_dir,
        finetune,
        cfg.finetune_overrides,
        objective,
        macs,
        cfg.trial_cpus,
        cfg.device.actor_name,
        cfg.measure_after_finetune,
        gpus=trial_gpus(cfg.gpus_per_trial, resources, joined=ray_address(cfg) is not None),
    )
    searcher = make_searcher(
        cfg.searcher, space.params, cfg.initial_points, cfg.seed, cfg.num_samples, objective.constrained
    )
    total = int(resources.get("CPU", 1))
    concurrent = cfg.max_concurrent or max(1, (total - cfg.device.threads) // cfg.trial_cpus)
    cluster_gpus = resources.get("GPU", 0)
    if ctx.gpus and cluster_gpus and not cfg.max_concurrent:  # no more trials at once than GPUs for them
        concurrent = max(1, min(concurrent, int(cluster_gpus // ctx.gpus)))
    storage = cfg.output_dir.resolve()
    epochs = finetune_epochs(cfg, finetune)
    scheduler = make_scheduler(cfg.early_stop, objective.threshold, epochs)
    wandb_mode = resolve_mode(cfg.wandb)
    tuner = _build_tuner(cfg, ctx, searcher, scheduler, concurrent, name, storage, wandb_mode)
    if not cfg.resume:  # what --resume needs to rebuild this run; written before any trial
        (storage / name).mkdir(parents=True, exist_ok=True)
        run = {"argv": cfg.argv, "space": str(space.path.resolve()), "cwd": os.getcwd()}
        (storage / name / RUN_FILE).write_text(json.dumps(run, indent=2))
    _log(
        f"searching {space.name}: {cfg.num_samples} trials, {concurrent} at a time, searcher {cfg.searcher}, "
        + (f"{ctx.gpus:g} GPU(s) per trial" if ctx.gpus else f"{cfg.trial_cpus} CPU(s) per trial, no GPU")
    )
    search_started = time.perf_counter()
    results = tuner.fit()
    search_seconds = time.perf_counter() - search_started
    rows = rows_from_results(results)
    done = [r for r in rows if r.status != "error" or r.error != "no final result"]
    if len(done) < cfg.num_samples:  # Ctrl-C: Tune stopped early and kept its state
        _log(
            f"interrupted: {len(done)} of {cfg.num_samples} trials finished and are kept in {storage / name}; "
            f"continue with: python -m edge_tune.run --resume {storage / name}"
        )
        return EXIT_INTERRUPTED
    experiment = {
        "space": space.name,
        "model": baseline.model_name,
        "dataset": data.name,
        "threshold_top1": objective.threshold,
        "accuracy_weight": objective.accuracy_weight,
        "baseline": {
            "top1": baseline.accuracy.top1,
            "top5": baseline.accuracy.top5,
            "top1_device": base_device.top1,
            "latency_ms": base_latency.latency_ms_p50,
            "latency_ms_p90": base_latency.latency_ms_p90,
            "macs": macs,
            "params": params,
            "train_seconds": baseline.train_seconds,
            "cached": baseline.cached,
        },
        "device": asdict(cfg.device),
        "precision": base_latency.precision,
        "finetune": {**asdict(finetune), **space.finetune, **cfg.finetune_overrides},
        "searcher": cfg.searcher,
        "objective": objective.kind,
        "latency_weight": objective.latency_weight,
        "early_stop": cfg.early_stop,
        "stopped_early": sum(r.status == "stopped" for r in rows),
        "num_samples": cfg.num_samples,
        "wall_seconds": time.perf_counter() - started,
        "search_seconds": search_seconds,
        "measure_after_finetune": cfg.measure_after_finetune,
        "gpus_per_trial": ctx.gpus,
    }
    wandb = (cfg.wandb_project, wandb_mode)
    return _finish(storage / name, rows, experiment, device, objective, macs, list(space.params), wandb)


def _build_tuner(
    cfg: ExperimentConfig,
    ctx: TrialContext,
    searcher: Any,
    scheduler: Any,
    concurrent: int,
    name: str,
    storage: Path,
    wandb_mode: str,
) -> Any:
    from ray import tune
    from ray.tune.search import ConcurrencyLimiter

    # Tune saves its experiment state (trials, searcher) at most this often. Trials take tens of
    # seconds, so saving within a second of every event costs nothing and means a driver killed
    # with kill -9 loses at most that second: no finished trial is run again after --resume.
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "1")

    resources = {"cpu": cfg.trial_cpus, **({"gpu": ctx.gpus} if ctx.gpus else {})}
    trainable = tune.with_resources(tune.with_parameters(run_trial, ctx=ctx), resources)
    callbacks = [_progress_callback(cfg.num_samples, cfg.device.actor_name, cfg.quiet)]
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
            search_alg=ConcurrencyLimiter(searcher, max_concurrent=concurrent),
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


def _finish(
    out_dir: Path,
    rows: list[Any],
    experiment: dict[str, Any],
    device: Any,
    objective: Objective,
    macs: int,
    params: list[str],
    wandb: tuple[str, str] = ("", "off"),
) -> int:
    """Write and print the results; the exit code says whether any trial was feasible."""
    import ray

    stats = ray.get(device.info.remote())
    experiment["device_stats"] = stats
    best, layers = write_outputs(out_dir, rows, params, experiment, ray.get(device.baseline_layers.remote()))
    print(format_table(rank(rows), params))
    _log(
        f"device: {stats['name']} on OpenVINO {stats['runtime'].split('-')[0]} (Python {stats['python']}): "
        f"{stats['benchmarks']:.0f} benchmarks, {stats['evaluations']:.0f} evaluations, "
        f"{stats['cache_hits']:.0f} cache hits, busy {100 * stats['busy_fraction']:.0f}% of the time"
    )
    if layers:
        print("per-layer latency (OpenVINO counters), best trial against the baseline, slowest first:")
        print(format_layers(layers))
    _log(f"wall time {experiment['wall_seconds']:.0f}s; results in {out_dir}")
    (out_dir / "experiment.json").write_text(json.dumps(experiment, indent=2, default=str))
    _log(f"report: {write_report(out_dir)}")
    project, mode = wandb
    if mode != "off":
        where = log_summary(out_dir, project, out_dir.name, mode, experiment, best)
        _log(
            f"W&B ({mode}, project {project}): summary run in {where}"
            + (
                f"; upload with: wandb sync {out_dir}/wandb/offline-run-* {out_dir}/*/wandb/offline-run-*"
                if mode == "offline"
                else ""
            )
        )
    front = pareto_front(rows)
    if front:
        print("Pareto front (top-1 as the lower of PyTorch and device, against latency), fastest first:")
        for r in front:
            m = r.metrics
            print(
                f"  {r.trial_id}: {m['latency_ms']:.3f} ms ({m['speedup']:.3f}x), top1 "
                f"{min(m['top1'], m.get('top1_device', m['top1'])):.2f}%{'' if r.feasible else '  (below threshold)'}"
            )
    if best is None:
        closest = closest_infeasible(rows)
        detail = (
            f"; the closest was {closest.trial_id} at top1 {closest.metrics['top1']:.2f}% "
            f"({-closest.metrics['constraint']:.2f} points short, speedup {closest.metrics['speedup']:.3f}x), "
            "kept in best.json marked infeasible; try a lower threshold or more fine-tuning epochs"
            if closest is not None
            else ""
        )
        _log(f"no trial of {len(rows)} reached the threshold of {objective.threshold:.2f}% top-1{detail}")
        return EXIT_NO_FEASIBLE
    m = best.metrics
    _log(
        f"best feasible: {best.trial_id} speedup {m['speedup']:.3f}x (cv {m['speedup_cv']:.3f}), "
        f"top1 {m['top1']:.2f}% (device {m['top1_device']:.2f}%), {m['macs']:,} MACs vs {macs:,}"
    )
    return EXIT_OK
