"""One trial's outcome, typed: what a trial reports, and what every output reads back.

A trial reports a ``TrialOutcome`` to Ray Tune as a plain dict
(``to_dict``) after each fine-tuning epoch (``final=False``: progress only)
and once at the end (``final=True``: the device's measurement, accuracy in
PyTorch and on the device, the score). Early stopping, the live progress,
the results table, the report, the deliverable and W&B read it back with
``from_dict``, which ignores the keys Ray Tune adds (``trial_id``,
``timestamp``, ...). ``results.json`` holds the outcomes as written, so the
report and the deliverable never parse CSV strings.

Comparing two trials is done on the interleaved speed-up, never on their
absolute latencies: those were measured minutes apart on a machine whose
speed drifts. ``latency_ms_normalised`` puts a speed-up back on a time axis
against one reference (the run's baseline measurement).

>>> o = TrialOutcome(top1=98.6, top1_device=98.3, speedup=1.35, final=True)
>>> o.top1_judged, round(o.latency_ms_normalised(0.81), 3)
(98.3, 0.6)
>>> TrialOutcome.from_dict({**o.to_dict(), "trial_id": "x"}) == o
True
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

__all__ = ["REPEAT", "TrialOutcome", "TrialRow", "finite", "json_safe"]

NAN = math.nan


def _unmeasured(v: Any) -> bool:
    return (isinstance(v, float) and math.isnan(v)) or v == {}


def finite(v: Any) -> bool:
    """A real number, neither NaN nor infinite (booleans are not numbers here)."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


@dataclass
class TrialOutcome:
    """A trial's report; NaN where not measured (yet)."""

    final: bool = False  # True: the trial's last report, with the device's measurement
    epoch: int = 0  # fine-tuning epochs done
    epochs: int = 0  # fine-tuning epochs planned
    loss: float = NAN  # mean training loss of the last epoch
    top1: float = NAN  # %, PyTorch, validation split
    top5: float = NAN  # %
    top1_device: float = NAN  # %, the compiled model on the device (the lowest over the kinds, with several)
    top5_device: float = NAN  # %
    device_gap_flag: bool = False  # PyTorch and device top-1 more than DEVICE_GAP_POINTS apart
    speedup: float = NAN  # baseline latency / this model's, median of interleaved per-round ratios (--speedup-of)
    speedup_ci_low: float = NAN  # 95% CI of the speed-up
    speedup_ci_high: float = NAN
    speedup_cv: float = NAN  # coefficient of variation of the per-round ratios
    rounds: int = 0  # interleaved timing rounds
    converged: bool = False  # the CI reached its target before the time cap
    latency_ms: float = NAN  # p50 of batch-1 inferences, ms: a measurement, not for comparing trials
    latency_ms_p90: float = NAN
    baseline_latency_ms: float = NAN  # the baseline's p50 in the same interleaved rounds, ms
    throughput_fps: float = NAN  # images per second at batch 1
    precision: str = ""  # OpenVINO inference precision actually used (f32, bf16, ...)
    compile_s: float = NAN  # OpenVINO compile time, s
    first_inference_ms: float = NAN
    latency_cached: bool = False  # the architecture had been measured before (cache keyed by structure)
    ov_macs: int = 0  # MACs OpenVINO counts in the compiled graph
    macs: int = 0  # MACs for one image, PyTorch
    params: int = 0  # parameters
    macs_ratio: float = NAN  # macs / the baseline's
    zeros: int = 0  # parameters held at zero by fine-grained or row masks
    int8: bool = False  # the device ran an INT8 model
    channels: dict[str, int] = field(default_factory=dict)  # first layer of each pruned group -> channels left
    # --also-device: each kind's own speed-up, interval, p50s and top-1 (edge_tune.kinds); {} with one kind
    kinds: dict[str, dict[str, float]] = field(default_factory=dict)
    feasible: bool = False  # judged top-1 at or above the threshold
    constraint: float = NAN  # judged top-1 - threshold, points; feasible when >= 0
    score: float = NAN  # the objective (objective.py); NaN until latency is known

    @property
    def top1_judged(self) -> float:
        """The accuracy that decides feasibility: the lower of PyTorch and device (PyTorch's until measured)."""
        return min(self.top1, self.top1_device) if finite(self.top1_device) else self.top1

    def latency_ms_normalised(self, reference_ms: float) -> float:
        """This trial's latency on the reference baseline's time scale: ``reference_ms / speedup``, ms."""
        return reference_ms / self.speedup if finite(self.speedup) and self.speedup > 0 else NAN

    def faster_than_baseline(self) -> bool:
        """The whole 95% CI of the speed-up is above 1: measurably faster, not within the noise."""
        return finite(self.speedup_ci_low) and self.speedup_ci_low > 1.0

    def to_dict(self, measured_only: bool = False) -> dict[str, Any]:
        """Every field; with ``measured_only``, without the NaN and empty ones (a fine-tuning epoch's report), but
        always with ``score`` and ``constraint``, which Ray Tune's searchers look for in every result."""
        d = asdict(self)
        if measured_only:
            d = {k: v for k, v in d.items() if k in ("score", "constraint") or not _unmeasured(v)}
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> TrialOutcome:
        """From a Tune result or ``results.json``: known keys typed, missing ones default, others ignored."""
        d = d or {}
        kwargs: dict[str, Any] = {}
        for f in fields(cls):
            if f.name not in d or d[f.name] is None:
                continue
            v, kind = d[f.name], str(f.type)
            if kind == "bool":
                kwargs[f.name] = bool(v)
            elif kind == "int":
                kwargs[f.name] = int(v) if finite(v) else 0
            elif kind == "float":
                kwargs[f.name] = float(v) if isinstance(v, (int, float)) else NAN
            elif kind == "str":
                kwargs[f.name] = str(v)
            elif f.name == "kinds":  # numbers, NaN where results.json holds null
                kwargs[f.name] = {
                    str(k): {str(n): float(x) if isinstance(x, (int, float)) else NAN for n, x in dict(m).items()}
                    for k, m in dict(v).items()
                }
            else:
                kwargs[f.name] = dict(v)
        return cls(**kwargs)


REPEAT = "repeat"  # a confirmation trial's config key (edge_tune.confirm): which repeat of its candidate it is


@dataclass
class TrialRow:
    trial_id: str
    status: str  # ok | stopped (early, for accuracy) | error
    config: dict[str, Any]
    outcome: TrialOutcome = field(default_factory=TrialOutcome)
    error: str = ""
    checkpoint: Path | None = None  # the trial's saved model folder
    timestamp: float = math.nan  # Ray Tune's time of the trial's last report, s since the epoch
    # Confirmation (edge_tune.confirm): the judged top-1 of every run of this configuration, their mean
    # less the margin, and whether that held the threshold; None where it was not repeated, and its own
    # run decides.
    runs: tuple[float, ...] = ()
    held: bool | None = None
    top1_lower: float = math.nan

    @property
    def feasible(self) -> bool:
        return self.status == "ok" and (self.outcome.feasible if self.held is None else self.held)

    @property
    def top1_mean(self) -> float:
        """The mean judged top-1 over the runs of this configuration; its own where it was not repeated."""
        runs = self.runs
        return sum(runs) / len(runs) if runs else self.outcome.top1_judged

    @property
    def shortfall(self) -> float:
        """Points the mean judged top-1 lies above the threshold (below: negative), as ``outcome.constraint``."""
        return self.outcome.constraint + self.top1_mean - self.outcome.top1_judged

    @property
    def repeat(self) -> int:
        """0 for a search trial, k for a candidate's k-th confirmation run."""
        value = self.config.get(REPEAT, 0)
        return int(value) if isinstance(value, int) else 0

    @property
    def score(self) -> float:
        return self.outcome.score if finite(self.outcome.score) else -math.inf

    def to_dict(self, out_dir: Path | None = None) -> dict[str, Any]:
        """Plain JSON values (NaN as null); ``checkpoint`` relative to ``out_dir`` when given."""
        ckpt = self.checkpoint
        return json_safe(
            {
                "trial_id": self.trial_id,
                "status": self.status,
                "feasible": self.feasible,
                "error": self.error,
                "config": self.config,
                "checkpoint": (os.path.relpath(ckpt, out_dir) if out_dir else str(ckpt)) if ckpt else None,
                "timestamp": self.timestamp,
                "outcome": self.outcome.to_dict(),
                "runs": list(self.runs),
                "held": self.held,
                "top1_lower": self.top1_lower,
            }
        )

    @classmethod
    def from_dict(cls, d: dict[str, Any], out_dir: Path | None = None) -> TrialRow:
        ckpt = d.get("checkpoint")
        return cls(
            str(d["trial_id"]),
            str(d["status"]),
            dict(d.get("config") or {}),
            TrialOutcome.from_dict(d.get("outcome")),
            str(d.get("error") or ""),
            (out_dir / ckpt if out_dir else Path(ckpt)) if ckpt else None,
            float(d["timestamp"]) if finite(d.get("timestamp")) else math.nan,
            tuple(float(v) if finite(v) else math.nan for v in d.get("runs") or ()),
            None if d.get("held") is None else bool(d["held"]),
            float(d["top1_lower"]) if finite(d.get("top1_lower")) else math.nan,
        )


def json_safe(v: Any) -> Any:
    """``v`` with NaN and infinities as None, tuples as lists: standard JSON."""
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {k: json_safe(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [json_safe(x) for x in v]
    return v
