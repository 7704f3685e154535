"""The command line: ``python -m edge_tune.run --space filter_prune`` (or ``edge-tune``).

Precedence, fixed: built-in defaults, then the search space file (its
``search`` and ``finetune`` sections), then these flags.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any, NoReturn

from edge_tune.config import SMOKE, default
from edge_tune.errors import UserError
from edge_tune.objective import OBJECTIVES
from edge_tune.tracking import MODES

__all__ = ["build_parser", "main"]


def _choices(registry: dict[str, object]) -> str:
    return ", ".join(registry)


def _defaulted(p: argparse.ArgumentParser, flag: str, what: str, **kwargs: Any) -> None:
    """A flag whose default is ``config.default``'s, shown at the end of its help."""
    value = default(flag.removeprefix("--").replace("-", "_"))
    p.add_argument(
        flag,
        default=value,
        help=f"{what} (default {value:g})" if isinstance(value, float) else f"{what} (default {value})",
        **kwargs,
    )


class _Parser(argparse.ArgumentParser):
    """argparse whose errors are ``UserError``s: one paragraph, exit 2, not the usage block and a second
    message (a saved command line that no longer parses is reported as the damaged file it is)."""

    def error(self, message: str) -> NoReturn:
        raise UserError(f"{message} (python -m edge_tune.run --help lists the flags)")


def build_parser() -> argparse.ArgumentParser:
    """The flags; every default shown and used is ``config.default``'s."""
    from edge_tune.data import available_datasets
    from edge_tune.early_stop import EARLY_STOPPING
    from edge_tune.kinds import SPEEDUP_OF
    from edge_tune.search import SEARCHERS
    from edge_tune.tool_flags import add_normalisation_flags

    p = _Parser(
        prog="edge-tune",
        allow_abbrev=False,  # --smok is not --smoke
        description=(
            "Search compression parameters for the lowest latency measured on an edge device, "
            "keeping top-1 above a threshold."
        ),
    )
    p.add_argument("--space", default=None, help="search space: a name in search_spaces/ or a .yaml path")
    p.add_argument(
        "--schedule",
        type=Path,
        default=None,
        metavar="FILE",
        help="instead of --space: a Distiller schedule file run as written, as one trial, on --model, --weights "
        "and --dataset (fine-tuning epochs default to its last pruning, regularizing or thinning epoch + 1)",
    )
    p.add_argument(
        "--check",
        action="store_true",
        help="validate the space or schedule with the model and data, without training; print what would run "
        "(pruners, their layers and sparsities, the final architecture and its MACs) and exit 0, or 2",
    )
    _defaulted(
        p,
        "--accuracy-threshold",
        "top-1 to keep: 97.5 (absolute, percent) or -1.0 (points below the baseline)",
        metavar="T",
    )
    _defaulted(
        p,
        "--objective",
        "constrained: the fastest model above the threshold; combined: maximise ln(top1) + w ln(speedup), "
        "MnasNet's weighted form, with no constraint for the searcher (for comparison)",
        choices=OBJECTIVES,
    )
    _defaulted(p, "--accuracy-weight", "constrained: score weight of accuracy", type=float)
    _defaulted(p, "--latency-weight", "combined: the exponent w", type=float)
    p.add_argument(
        "--num-samples",
        type=int,
        default=None,
        help=f"number of trials (default: space file, else {default('num_samples')})",
    )
    p.add_argument("--max-concurrent", type=int, default=None, help="trials at once (default: CPUs beside the device)")
    p.add_argument(
        "--epochs",
        type=int,
        default=None,
        help=f"fine-tuning epochs per trial (default: space file, else {default('finetune').epochs})",
    )
    p.add_argument("--lr", type=float, default=None, help="fine-tuning learning rate (default: space file, else 0.01)")
    p.add_argument(
        "--truncate-lr",
        action="store_true",
        help="let an lr scheduler's policy end with fine-tuning when it would run longer (otherwise an error)",
    )
    p.add_argument(
        "--baseline-epochs",
        type=int,
        default=None,
        help=f"baseline training epochs (default {default('baseline_epochs')})",
    )
    _defaulted(p, "--searcher", "; ".join(f"{n}: {e.about}" for n, e in SEARCHERS.items()), choices=list(SEARCHERS))
    _defaulted(
        p,
        "--early-stop",
        "threshold: stop a trial that cannot reach the threshold after fine-tuning; asha: Ray's ASHA on top-1; none",
        choices=list(EARLY_STOPPING),
    )
    p.add_argument(
        "--initial-points",
        type=int,
        default=None,
        help=f"trials before a model proposes (default: space file, else {default('initial_points')})",
    )
    p.add_argument(
        "--screen",
        type=int,
        default=None,
        help="sieve: candidates screened (pruned, measured on the device, scored by the accuracy proxy) before the "
        f"first fine-tune; a quarter as many more before each later one (default {default('screen')}, "
        f"--smoke {SMOKE['screen']})",
    )
    p.add_argument(
        "--confirm",
        type=int,
        default=None,
        metavar="N",
        help="fine-tunes of --num-samples kept back to confirm the search's best candidates: each is fine-tuned "
        "--confirm-seeds more times with other seeds, and the first whose mean top-1 holds the threshold is the "
        "pick; 0: none (default: a fifth of --num-samples in whole candidates, none below 10 trials)",
    )
    _defaulted(p, "--confirm-seeds", "repeats of each candidate under --confirm", type=int)
    _defaulted(
        p,
        "--confirm-margin",
        "standard errors of its mean top-1 (from the spread of its own runs, shrunk towards 0.5 points) a "
        "candidate must clear the threshold by to hold; 0: the mean alone",
        type=float,
        metavar="SE",
    )
    _defaulted(p, "--seed", "searcher, baseline and fine-tuning seed", type=int)
    p.add_argument("--model", default="", help="zoo model or package.module:function (default: the space file's)")
    p.add_argument(
        "--weights",
        type=Path,
        default=None,
        metavar="FILE",
        help="the model's trained weights: a state dict, or a checkpoint holding one under state_dict, "
        "model_state_dict, model or net; the baseline is then evaluated, not trained (default: the space file's)",
    )
    p.add_argument("--dataset", default="", help=f"{', '.join(available_datasets())} (default: the space file's)")
    p.add_argument(
        "--input-size",
        default="",
        metavar="H|HxW",
        help="the model's input in pixels, e.g. 224 or 96x128 (default: the space file's, else the dataset's "
        "natural size: 32 for digits and CIFAR, 28 for the MNIST family)",
    )
    p.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="folder of the dataset's files (CIFAR pickles, an image folder, IDX files); nothing is downloaded",
    )
    add_normalisation_flags(p)
    p.add_argument(
        "--device",
        default=None,
        help="the target device: an OpenVINO device (CPU, GPU, NPU, AUTO:...), or ort:CPU for ONNX Runtime's "
        f"CPU provider (default: the space file's devices list, else {default('device')})",
    )
    p.add_argument(
        "--also-device",
        action="append",
        default=None,
        metavar="KIND",
        help="another kind every candidate is measured on, against its own baseline (repeat for more); with "
        "--device or this flag the space file's devices list is not used",
    )
    p.add_argument(
        "--speedup-of",
        default=default("speedup_of"),
        choices=SPEEDUP_OF,
        help="the speed-up the search optimises when several kinds are measured: the target's, or the worst or "
        "geometric mean over the kinds (default %(default)s)",
    )
    _defaulted(p, "--precision", "OpenVINO inference precision", choices=["f32", "f16", "bf16"])
    _defaulted(p, "--device-threads", "CPU threads (and Ray CPUs) of the device actor", type=int)
    _defaulted(
        p,
        "--devices",
        "devices of the --device kind, one actor each behind one pool: a job goes to whichever is free, each "
        "measures against its own baseline; locally, this machine's Ray advertises that many, on a cluster "
        "the edge hosts must",
        type=int,
        metavar="N",
    )
    p.add_argument(
        "--gpus-per-trial",
        default=default("gpus_per_trial"),
        metavar="N",
        help="GPUs per trial, for fine-tuning on CUDA: auto (default: 1 when the Ray cluster has GPUs, else 0) "
        "or a number; on an autoscaling cluster give a number so that Ray adds GPU workers",
    )
    p.add_argument(
        "--device-python",
        default="",
        metavar="PATH",
        help="run OpenVINO under this interpreter on the device's host, e.g. a Python 3.9 with openvino 2021.4 "
        "for a Neural Compute Stick 2 (see docs/device.md)",
    )
    _defaulted(
        p,
        "--target-ci",
        "stop timing when the speed-up's 95%% CI is within this many percent",
        type=float,
        metavar="PCT",
    )
    _defaulted(
        p, "--time-cap", "stop timing one model after this many seconds, converged or not", type=float, metavar="S"
    )
    p.add_argument("--address", default=None, help="Ray cluster to join (default: $RAY_ADDRESS, else start one)")
    _defaulted(p, "--output-dir", "where experiment folders go", type=Path)
    p.add_argument("--name", default="", help="experiment folder name (default <space>-<date>-<time>)")
    p.add_argument("--cache-dir", type=Path, default=None, help="baseline cache (default ~/.cache/edge_tune)")
    _defaulted(
        p,
        "--wandb",
        "Weights & Biases: offline (runs written in the experiment folder, no account), online, off; "
        "auto: online when WANDB_API_KEY is set, else offline",
        choices=MODES,
    )
    _defaulted(p, "--wandb-project", "W&B project")
    p.add_argument("--quiet", action="store_true", help="no per-trial, status or training-progress lines")
    p.add_argument(
        "--measure-after-finetune",
        action="store_true",
        help="time each trial's model after fine-tuning, not during it (the serial order; for comparison)",
    )
    p.add_argument(
        "--resume",
        type=Path,
        default=None,
        metavar="DIR",
        help="continue an interrupted experiment folder with its own settings; finished trials are not re-run",
    )
    p.add_argument(
        "--trust-folder",
        action="store_true",
        help="with --resume: resume a folder this user's runs did not write (Ray unpickles files in it, "
        "which can run code: only for folders from people you trust)",
    )
    p.add_argument(
        "--smoke",
        action="store_true",
        help="2 trials of 1 fine-tune epoch (or as few as the schedule needs) on a 4-epoch baseline: a quick try "
        "(implies --truncate-lr)",
    )
    return p


def _positive(flag: str, value: int | None) -> None:
    if value is not None and value < 1:
        raise UserError(f"{flag} {value}: must be at least 1")


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.resume is None:
        if args.trust_folder:
            raise UserError("--trust-folder goes with --resume DIR: it lets a folder edge_tune did not write resume")
        if (args.space is None) == (args.schedule is None):
            raise UserError("give --space (a search) or --schedule (one Distiller schedule, as written), not both")
        return args
    if [a for a in argv if a.startswith("--") and a not in ("--resume", "--trust-folder")]:
        raise UserError("--resume takes the experiment's own settings; give it no other flags but --trust-folder")
    return resume_args(args.resume, args.trust_folder)


def _check_numbers(args: argparse.Namespace) -> None:
    """Numbers that parse but make no sense are refused before anything starts."""
    if args.lr is not None and not args.lr > 0:
        raise UserError(f"--lr {args.lr}: a learning rate must be above 0")
    if not args.time_cap > 0:
        raise UserError(f"--time-cap {args.time_cap:g}: timing needs more than 0 seconds per model")
    if not 0 < args.target_ci < 100:
        raise UserError(f"--target-ci {args.target_ci:g}: the CI's half-width must be between 0 and 100 percent")
    for flag in ("accuracy_weight", "latency_weight"):
        if not getattr(args, flag) >= 0:
            raise UserError(f"--{flag.replace('_', '-')} {getattr(args, flag):g}: a weight must be 0 or more")
    from edge_tune.confirm import check_margin

    check_margin(args.confirm_margin)


def _check_local_device(device: str, precision: str, flag: str = "--device") -> None:
    """The device, on this machine: a name its runtime has, at a precision it runs."""
    from edge_tune.device.engine import ORT_PREFIX
    from edge_tune.device.ort import available_devices
    from edge_tune.device.runner import check_device_name

    if device.startswith(ORT_PREFIX):
        try:
            import onnxruntime
        except ImportError:
            raise UserError(f"{flag} {device}: onnxruntime is not installed here (pip install onnxruntime)") from None
        if precision != "f32":
            raise UserError(
                f"--precision {precision}: ONNX Runtime ({flag} {device}) runs the model at the precision it was "
                "exported in, f32; leave --precision out"
            )
        check_device_name(device, available_devices(onnxruntime), f"ONNX Runtime {onnxruntime.__version__}", flag)
        return
    import openvino

    check_device_name(device, list(openvino.Core().available_devices), openvino.get_version(), flag)


def _interpreter(path: str) -> None:
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        raise UserError(f"--device-python {path}: no executable file there; give the path of a Python interpreter")


def config_from_args(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    """Defaults, then the space file, then the flags."""
    from edge_tune.cluster import ray_address, trial_gpus
    from edge_tune.config import ExperimentConfig
    from edge_tune.data import parse_input_size
    from edge_tune.device import DeviceConfig, TimingPlan
    from edge_tune.device.engine import ORT_PREFIX
    from edge_tune.kinds import check_kinds, kind_config
    from edge_tune.space import find_space, schedule_space
    from edge_tune.tool_flags import normalisation_from_flags

    for flag in (
        "num_samples",
        "max_concurrent",
        "epochs",
        "baseline_epochs",
        "initial_points",
        "device_threads",
        "devices",
        "screen",
        "confirm_seeds",
    ):
        _positive("--" + flag.replace("_", "-"), getattr(args, flag))
    _check_numbers(args)
    for flag in ("cache_dir", "output_dir"):
        folder = getattr(args, flag)
        if folder is not None and folder.exists() and not folder.is_dir():
            raise UserError(f"--{flag.replace('_', '-')} {folder}: a file is there; give a folder (made if missing)")
    space = schedule_space(args.schedule) if args.schedule else find_space(args.space)
    cfg = ExperimentConfig(space=space)
    search = space.search
    smoke = dict(SMOKE) if args.smoke else {}
    needed = _needed_epochs(space)
    if smoke:  # one epoch, or as few as the schedule's last pruning step needs
        smoke["epochs"] = max(smoke["epochs"], needed)
    if space.fixed:
        if args.num_samples not in (None, 1):
            what = "--schedule" if args.schedule else "--space"
            raise UserError(
                f"--num-samples {args.num_samples}: {what} {space.path} searches no parameter, so it is one "
                "trial; leave --num-samples out"
            )
        smoke["num_samples"] = 1
    cfg.num_samples = args.num_samples or smoke.get("num_samples") or search.get("num_samples", cfg.num_samples)
    cfg.max_concurrent = args.max_concurrent or search.get("max_concurrent", 0)
    cfg.initial_points = (
        args.initial_points or smoke.get("initial_points") or search.get("initial_points", cfg.initial_points)
    )
    cfg.screen = args.screen or smoke.get("screen") or cfg.screen
    cfg.confirm, cfg.confirm_seeds, cfg.confirm_margin = args.confirm, args.confirm_seeds, args.confirm_margin
    epochs = args.epochs or smoke.get("epochs") or (needed if args.schedule else None)
    cfg.finetune_overrides = {"epochs": epochs} if epochs else {}
    if args.lr is not None:
        cfg.finetune_overrides["lr"] = args.lr
    cfg.truncate_lr = args.truncate_lr or args.smoke  # a quick try cuts the learning-rate decay with the epochs
    cfg.baseline = replace(
        cfg.baseline, epochs=args.baseline_epochs or smoke.get("baseline_epochs") or cfg.baseline.epochs
    )
    cfg.accuracy_threshold, cfg.accuracy_weight = args.accuracy_threshold, args.accuracy_weight
    cfg.searcher, cfg.seed, cfg.address, cfg.name = args.searcher, args.seed, args.address, args.name
    cfg.objective, cfg.latency_weight, cfg.early_stop = args.objective, args.latency_weight, args.early_stop
    cfg.model, cfg.dataset = args.model, args.dataset
    cfg.weights = args.weights.resolve() if args.weights else space.weights  # read (and checked) by the baseline
    size = args.input_size or space.input_size
    cfg.input_size = parse_input_size(size) if size else None
    cfg.mean, cfg.std = normalisation_from_flags(args.mean or space.mean, args.std or space.std)
    cfg.data_dir = args.data_dir.resolve() if args.data_dir else None  # trials run in other folders
    timing = TimingPlan(target_ci=args.target_ci / 100, time_cap_s=args.time_cap)
    local = not (args.address or os.environ.get("RAY_ADDRESS"))
    if not local:
        from edge_tune.cluster import check_address

        check_address(args.address or os.environ["RAY_ADDRESS"])
    target, also = _kinds(args, space)
    check_kinds(target, also, args.speedup_of)
    if args.device_python and local:
        _interpreter(args.device_python)  # on a cluster it lives on the edge host, not here
    for device, flag in [(target, "--device"), *((d, "--also-device") for d in also)]:
        if local and not args.device_python:  # this machine's device: checked now, not after Ray has started
            _check_local_device(device, args.precision, flag)
        if device.startswith(ORT_PREFIX) and space.schedule.get("quantizers"):
            what = f"--schedule {space.path}" if args.schedule else f"--space {space.path}"
            raise UserError(
                f"{flag} {device}: {what} quantizes to INT8 with NNCF, whose model is OpenVINO IR, which ONNX "
                "Runtime does not read; measure it on OpenVINO devices (--device CPU) or drop schedule.quantizers"
            )
    cfg.device = DeviceConfig(
        device=target,
        precision=args.precision,
        threads=args.device_threads,
        count=args.devices,
        timing=timing,
        python=args.device_python,
    )
    cfg.also_devices = [kind_config(cfg.device, device) for device in also]
    cfg.speedup_of = args.speedup_of
    cfg.output_dir = args.output_dir
    cfg.wandb, cfg.wandb_project, cfg.quiet = args.wandb, args.wandb_project, args.quiet
    cfg.measure_after_finetune = args.measure_after_finetune
    cfg.gpus_per_trial = args.gpus_per_trial
    # Checked now, before any training: the local cluster Ray would start has this machine's GPUs; a
    # joined cluster is asked once Ray is up, and here only the flag's form is checked.
    joined = ray_address(cfg) is not None
    import torch

    trial_gpus(args.gpus_per_trial, {} if joined else {"GPU": torch.cuda.device_count()}, joined)
    if args.cache_dir is not None:
        cfg.cache_dir = args.cache_dir
    return cfg


def _kinds(args: argparse.Namespace, space: Any) -> tuple[str, list[str]]:
    """(target kind, other kinds): the flags' when either --device or --also-device is given, else the space
    file's ``devices`` list (its first is the target), else the default device alone."""
    if args.device is not None or args.also_device:
        return args.device or default("device"), list(args.also_device or [])
    if space.devices:
        return space.devices[0], list(space.devices[1:])
    return default("device"), []


def _needed_epochs(space: Any) -> int:
    """Fine-tuning epochs the schedule needs: its last pruning, regularizing or thinning epoch, plus one."""
    from edge_tune.compression import parse_schedule
    from edge_tune.space import located

    try:
        return parse_schedule(space.render(space.midpoint())[0]).last_epoch() + 1
    except ValueError as exc:
        raise located(space.path, space.path.read_text(), exc, space.schedule_file) from exc


def resume_args(folder: Path, trusted: bool = False) -> argparse.Namespace:
    """The saved command line of the experiment in ``folder``, pointed back at that folder. Unless ``trusted``
    (--trust-folder), the folder must be one this user's runs wrote (``trust.check_folder``)."""
    from edge_tune.config import RUN_FILE
    from edge_tune.trust import check_folder

    saved = folder / RUN_FILE
    if not saved.is_file():
        raise UserError(f"--resume {folder}: not an edge_tune experiment folder (it has no {RUN_FILE})")
    try:
        run = json.loads(saved.read_text())
        args = build_parser().parse_args(run["argv"])
        space = run["space"]
    except (ValueError, KeyError, TypeError, UserError) as exc:
        raise UserError(
            f"--resume {folder}: {saved} is damaged ({type(exc).__name__}: {exc}); it holds the run's command line, "
            "which --resume needs: start the experiment again"
        ) from None
    if not trusted:  # reading the command line runs nothing; acting on it may import a model's module
        check_folder(folder)
    if run.get("schedule"):  # resolved when saved: --resume may run from another folder
        args.schedule, args.space = Path(space), None
    else:
        args.space = space
    for flag in ("data_dir", "cache_dir", "weights"):
        if getattr(args, flag) is not None:
            setattr(args, flag, Path(run["cwd"]) / getattr(args, flag))
    args.output_dir, args.name, args.resume = folder.resolve().parent, folder.resolve().name, folder
    return args


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    from edge_tune import signals

    signals.install(fresh=True)
    try:
        from edge_tune.experiment import run_experiment

        args = _parse(argv)
        cfg = config_from_args(args)
        cfg.argv, cfg.resume = list(argv), args.resume is not None
        if args.check:
            from edge_tune.check import check_run

            return check_run(cfg)
        return run_experiment(cfg)
    except UserError as exc:
        print(f"edge-tune: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("edge-tune: interrupted", file=sys.stderr)
        return signals.exit_code()


if __name__ == "__main__":
    sys.exit(main())
