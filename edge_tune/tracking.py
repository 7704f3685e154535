"""Weights & Biases: one W&B run per trial, through Ray Tune's integration, and one summary run per experiment.

Offline by default, so no account is needed: each trial's run is written in
its own trial folder (``<trial>/wandb/offline-run-*``), the summary run in
``EXPERIMENT/wandb/``; ``wandb sync EXPERIMENT/wandb/offline-run-* EXPERIMENT/*/wandb/offline-run-*``
uploads them later. Online when an API key is there (``WANDB_API_KEY``, or
``--wandb online`` after ``wandb login``). Runs are grouped by experiment name
in the project ``--wandb-project``.

A trial's run holds its config and every result Tune gets from it: each
fine-tuning epoch's loss, top-1 and top-5, then the final device metrics,
and, in its summary, its per-layer latency table (``layers``, from the trial's checkpoint).
The summary run holds the experiment's settings and baseline as config, the
trial table, the Pareto front (on the speed-up and the normalised latency,
as in ``pareto.csv``) and the per-layer latency table of the chosen
trial against the baseline as W&B tables, the report's figures, and the
chosen trial's ``best/`` folder as a ``model`` artifact.
"""

from __future__ import annotations

import csv
import os
import re
from pathlib import Path
from typing import Any

from edge_tune.errors import UserError
from edge_tune.kinds import kind_columns
from edge_tune.outcome import TrialRow

__all__ = ["MODES", "log_summary", "resolve_mode", "trial_callbacks"]

MODES = ("auto", "offline", "online", "off")


def resolve_mode(flag: str) -> str:
    """``auto``: online when W&B has an API key in the environment, else offline."""
    if flag not in MODES:
        raise UserError(f"--wandb {flag}: must be one of {', '.join(MODES)}")
    if flag == "auto":
        return "online" if os.environ.get("WANDB_API_KEY") else "offline"
    return flag


def _environment(mode: str) -> None:
    os.environ.setdefault("WANDB_SILENT", "true")
    if mode == "offline":  # Ray's callback asks for an API key unless this says offline
        os.environ["WANDB_MODE"] = "offline"


def trial_callbacks(project: str, group: str, mode: str) -> list[Any]:
    """Ray Tune's ``WandbLoggerCallback`` (each trial a W&B run named by its trial ID, in its own folder),
    and the callback after it that copies the runs into the experiment folder once they are written."""
    from ray.air.integrations.wandb import WandbLoggerCallback, _WandbLoggingActor
    from ray.tune import Callback

    class TrialLogger(_WandbLoggingActor):  # type: ignore[misc]
        """Ray's per-trial logging actor, which also logs the trial's per-layer latency table."""

        def _handle_checkpoint(self, checkpoint_path: str) -> None:
            # Instead of uploading the whole checkpoint as an artifact: its per-layer latency table.
            for table in Path(checkpoint_path).glob("layers*.csv"):  # layers_<kind>.csv: --also-device's
                # In the summary: the checkpoint can come before its result's history step.
                self._wandb.run.summary[table.stem] = _table(table)

    class Logger(WandbLoggerCallback):  # type: ignore[misc]
        _logger_actor_cls = TrialLogger

    class CopyRuns(Callback):  # type: ignore[misc]
        """A trial's W&B run is written in the trial's staging folder, which Tune copies into the experiment
        folder; Tune's last copy comes before the W&B callback has waited for the last runs to be written
        (its ``on_experiment_end``), which left the last trial's run as a bare header. Copies them again."""

        def on_experiment_end(self, trials: list[Any], **info: Any) -> None:
            import pyarrow.fs

            for trial in trials:
                runs = Path(trial.local_path, "wandb")
                if runs.is_dir() and trial.path:
                    fs = trial.storage.storage_filesystem
                    pyarrow.fs.copy_files(str(runs), f"{trial.path}/wandb", destination_filesystem=fs)

    _environment(mode)
    return [Logger(project=project, group=group, mode=mode, job_type="trial", upload_checkpoints=True), CopyRuns()]


def _table(path: Path) -> Any:
    import wandb

    with open(path, newline="") as f:
        rows: list[list[Any]] = list(csv.reader(f))
    return wandb.Table(columns=rows[0], data=rows[1:]) if rows else None


def log_summary(
    out_dir: Path, project: str, group: str, mode: str, experiment: dict[str, Any], best: TrialRow | None
) -> str:
    """Write the experiment's summary run; returns its folder (offline) or URL (online)."""
    import wandb

    _environment(mode)
    run = wandb.init(
        project=project,
        group=group,
        name=f"{group}-summary",
        job_type="summary",
        dir=out_dir,
        mode=mode,  # type: ignore[arg-type]
        config={k: v for k, v in experiment.items() if k != "device_stats"},
    )
    try:
        names = ["results", "pareto", "layers", *sorted(p.stem for p in out_dir.glob("layers_*.csv"))]
        tables = {name: _table(out_dir / f"{name}.csv") for name in names if (out_dir / f"{name}.csv").exists()}
        run.log({name: t for name, t in tables.items() if t is not None})
        figures = sorted((out_dir / "figures").glob("*.png"))
        if figures:
            run.log({f"figures/{p.stem}": wandb.Image(str(p)) for p in figures})
        if best is not None:
            o = best.outcome
            reference = experiment["baseline"]["latency_ms"]
            for key in ("speedup", "speedup_ci_low", "speedup_ci_high", "top1", "top1_device", "macs", "params"):
                run.summary[f"best/{key}"] = getattr(o, key)
            run.summary["best/top1_judged"] = o.top1_judged
            run.summary["best/latency_ms_normalised"] = o.latency_ms_normalised(reference)
            run.summary["best/trial_id"] = best.trial_id
            for column, value in kind_columns(o.kinds).items():  # --also-device: each kind's own
                run.summary[f"best/{column}"] = value
        run.summary["feasible"] = best is not None
        if (out_dir / "best").is_dir():
            artifact = wandb.Artifact(re.sub(r"[^\w.-]", "_", f"{group}-best"), type="model")
            artifact.add_dir(str(out_dir / "best"))
            run.log_artifact(artifact)
        where = str(run.dir if mode == "offline" else run.url)
    finally:
        run.finish()
    return str(Path(where).parent) if mode == "offline" else where
