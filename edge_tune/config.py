"""An experiment's configuration: every default in one place, read by the CLI's flags too.

Precedence, fixed: these defaults, then the search space file (its
``search`` and ``finetune`` sections), then the flags. ``default(name)`` is
what ``run.py``'s argparse shows and uses, so no default is written twice.
"""

from __future__ import annotations

import os
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any

from edge_tune.confirm import MARGIN
from edge_tune.device import DeviceConfig, TimingPlan
from edge_tune.objective import ACCURACY_WEIGHT, LATENCY_WEIGHT
from edge_tune.space import SearchSpace
from edge_tune.train import TrainConfig

__all__ = ["DEFAULT_CACHE", "RUN_FILE", "SMOKE", "ExperimentConfig", "default"]

RUN_FILE = "edge_tune_run.json"  # in the experiment folder: the command line, for --resume
DEFAULT_CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "edge_tune"  # baselines live here
# --smoke: a quick try; fine-tuning epochs are raised to what the schedule's last step needs
SMOKE = {"num_samples": 2, "epochs": 1, "baseline_epochs": 4, "initial_points": 2, "screen": 8}


@dataclass
class ExperimentConfig:
    space: SearchSpace
    model: str = ""  # zoo name or package.module:function; "" = the space file's
    weights: Path | None = None  # trained weights of the model (--weights); None = the space file's, else train
    dataset: str = ""  # digits | cifar10 | cifar100 | imagefolder; "" = the space file's
    data_dir: Path | None = None  # where the dataset's files are (--data-dir)
    input_size: tuple[int, int] | None = None  # (H, W) pixels; None = the dataset's natural size
    mean: tuple[float, ...] | None = None  # per-channel normalisation (--mean); None = the dataset's default
    std: tuple[float, ...] | None = None
    accuracy_threshold: str = "-1.0"  # "97.5" = top-1 >= 97.5%; "-1.0" = at most 1 point below baseline
    accuracy_weight: float = ACCURACY_WEIGHT  # score per 100 accuracy points beside ln(speedup)
    objective: str = "constrained"  # constrained | combined (see objective.py)
    latency_weight: float = LATENCY_WEIGHT  # combined: the exponent of the speed-up
    early_stop: str = "threshold"  # a name in early_stop.EARLY_STOPPING
    num_samples: int = 16  # trials
    max_concurrent: int = 0  # trials at once; 0 = as many as the CPUs left beside the device allow
    initial_points: int = 4  # trials before a model proposes (bayesopt: up to 3 on the uniform diagonal)
    searcher: str = "bayesopt"  # a name in search.SEARCHERS (--help lists them)
    screen: int = 48  # sieve: candidates screened before the first fine-tune (a quarter as many before each later)
    confirm: int | None = None  # fine-tunes of num_samples kept back to confirm candidates; None: a fifth
    confirm_seeds: int = 2  # repeats of each candidate with other seeds (edge_tune.confirm)
    confirm_margin: float = MARGIN  # standard errors of its mean a candidate must clear the threshold by
    seed: int = 0  # searcher, baseline training, fine-tuning
    baseline: TrainConfig = field(default_factory=TrainConfig)  # baseline training recipe
    finetune: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=3, lr=0.01))  # under the space's
    finetune_overrides: dict[str, Any] = field(default_factory=dict)  # flags; over the space's finetune section
    device: DeviceConfig = field(default_factory=DeviceConfig)  # the target kind (--device)
    also_devices: list[DeviceConfig] = field(default_factory=list)  # --also-device: other kinds, measured too
    speedup_of: str = "target"  # the speed-up the search optimises: target | worst | geomean (edge_tune.kinds)
    trial_cpus: int = 1  # CPUs (torch threads) per trial
    gpus_per_trial: str = "auto"  # GPUs per trial: a number, or auto (1 when the cluster has GPUs, else 0)
    measure_after_finetune: bool = False  # benchmark after fine-tuning instead of during it (slower)
    truncate_lr: bool = False  # an lr scheduler's policy may run past fine-tuning's last epoch (cut there)
    resume: bool = False  # continue the experiment output_dir/name: finished trials are kept, not re-run
    argv: list[str] = field(default_factory=list)  # the command line, saved so --resume can rebuild this config
    address: str | None = None  # Ray cluster to join; None starts a local one
    output_dir: Path = Path("edge_tune_results")  # experiments are folders in here
    name: str = ""  # experiment folder; default: <space>-<date>-<time>
    cache_dir: Path = field(default_factory=lambda: DEFAULT_CACHE)  # baselines
    wandb: str = "auto"  # auto | offline | online | off (see tracking.py)
    wandb_project: str = "edge_tune"
    quiet: bool = False  # no per-trial, status or baseline-epoch lines


def default(name: str) -> Any:
    """The built-in default of ``ExperimentConfig.name``; ``target_ci`` (percent) and ``time_cap`` (s) are
    the device's timing plan's, ``baseline_epochs`` the baseline recipe's."""
    derived = {
        "target_ci": 100 * TimingPlan().target_ci,
        "time_cap": TimingPlan().time_cap_s,
        "baseline_epochs": TrainConfig().epochs,
        "device": DeviceConfig().device,
        "precision": DeviceConfig().precision,
        "device_threads": DeviceConfig().threads,
        "devices": DeviceConfig().count,
    }
    if name in derived:
        return derived[name]
    f = next(f for f in fields(ExperimentConfig) if f.name == name)
    return f.default if f.default is not MISSING else f.default_factory()  # type: ignore[misc,operator]
