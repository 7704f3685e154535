"""Several kinds of device in one search: ``--device CPU --also-device ort:CPU``.

Every candidate is measured on the target kind (``--device``) and on each
``--also-device``, each on its own actor against its own baseline, so a
speed-up is never a ratio across devices. The search optimises one speed-up,
chosen by ``--speedup-of``:

- ``target``: the target kind's; the others are measured and reported.
- ``worst``: the lowest of the kinds' speed-ups, with that kind's interval and
  spread: a model that must be faster everywhere it ships.
- ``geomean``: their geometric mean. Its interval is the geometric means of
  the kinds' bounds: the geometric mean only grows with each speed-up, so when
  every kind's interval covers its own, this one covers theirs (jointly at
  least 1 - k x 5 % for k kinds of 95 % intervals). Its spread is that of a
  mean of k independent log-ratios.

Resources: Ray places each kind's actor on a node advertising
``edge_device_<slug>`` (``resource_for``), so a lab labels its hosts by kind
once and any of them can be the target; the target kind also runs where only
the plain ``edge_device`` is advertised, as a single-kind run always has.

Each kind's speed-up, interval, p50 and baseline p50, and top-1 on that
device, are in ``TrialOutcome.kinds``; ``results.csv`` spreads them into
columns named ``<field>_<slug>`` (``kind_columns``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from edge_tune.device.runner import DeviceConfig, LatencyResult
from edge_tune.errors import UserError

__all__ = [
    "KIND_FIELDS",
    "SPEEDUP_OF",
    "check_kinds",
    "combine",
    "gather",
    "kind_columns",
    "kind_config",
    "kind_fields",
    "kind_slug",
    "resource_for",
]

SPEEDUP_OF = ("target", "worst", "geomean")
KIND_FIELDS = ("speedup", "speedup_ci_low", "speedup_ci_high", "latency_ms", "baseline_latency_ms", "top1_device")


def kind_slug(device: str) -> str:
    """A device name as it can stand in a resource, an actor or a column name: ``ort:CPU`` is ``ort_cpu``."""
    slug = re.sub(r"[^a-z0-9]+", "_", device.lower()).strip("_")
    return slug or "device"


def kind_config(target: DeviceConfig, device: str) -> DeviceConfig:
    """The configuration of another kind beside ``target``: its own actor and resource, one device, the same
    timing, threads and precision."""
    slug = kind_slug(device)
    return replace(
        target, device=device, resource=f"{target.resource}_{slug}", actor_name=f"{target.actor_name}_{slug}", count=1
    )


def resource_for(target: DeviceConfig, cluster: Mapping[str, float]) -> DeviceConfig:
    """The target kind's configuration with the resource its actors ask for on this cluster: its kind's own
    (``edge_device_cpu``) where nodes advertise enough of it, else the plain ``edge_device``."""
    own = f"{target.resource}_{kind_slug(target.device)}"
    return replace(target, resource=own) if cluster.get(own, 0) >= target.count else target


def check_kinds(target: str, also: list[str], speedup_of: str) -> None:
    """Every kind once; ``--speedup-of`` other than target only with another kind to compare."""
    seen = {kind_slug(target): "--device " + target}
    for device in also:
        if kind_slug(device) in seen:
            raise UserError(
                f"--also-device {device}: {seen[kind_slug(device)]} is already measured (kinds are told apart by "
                f"name, letters and digits only: {kind_slug(device)!r}); give each kind once"
            )
        seen[kind_slug(device)] = "--also-device " + device
    if speedup_of not in SPEEDUP_OF:
        raise UserError(f"--speedup-of {speedup_of}: choose one of {', '.join(SPEEDUP_OF)}")
    if speedup_of != "target" and not also:
        raise UserError(
            f"--speedup-of {speedup_of}: only --device {target} is measured, so its speed-up is the only one; "
            "add the other kinds with --also-device (or a devices list in the space file)"
        )


def gather(refs: Mapping[str, Any]) -> dict[str, Any]:
    """``ray.get`` of one request to each kind's actor, by kind: ``{kind: result}``."""
    import ray

    return dict(zip(refs, ray.get(list(refs.values())), strict=True))


def combine(results: Mapping[str, LatencyResult], target: str, how: str) -> LatencyResult:
    """The target's measurement with the speed-up, its interval and spread replaced by those ``how`` asks for
    over every kind's (see the module's text). The p50s stay the target's."""
    mine = results[target]
    if how == "target" or len(results) == 1:
        return mine
    every = list(results.values())
    converged = all(r.converged for r in every)
    cached = all(r.cached for r in every)
    if how == "worst":
        w = min(every, key=lambda r: r.speedup if math.isfinite(r.speedup) else -math.inf)
        return replace(
            mine,
            speedup=w.speedup,
            speedup_ci_low=w.speedup_ci_low,
            speedup_ci_high=w.speedup_ci_high,
            speedup_cv=w.speedup_cv,
            converged=converged,
            cached=cached,
        )

    def geo(field: str) -> float:
        values = [float(getattr(r, field)) for r in every]
        if not all(math.isfinite(v) and v > 0 for v in values):
            return math.nan
        return math.exp(sum(math.log(v) for v in values) / len(values))

    cv = math.sqrt(sum(r.speedup_cv**2 for r in every)) / len(every)
    return replace(
        mine,
        speedup=geo("speedup"),
        speedup_ci_low=geo("speedup_ci_low"),
        speedup_ci_high=geo("speedup_ci_high"),
        speedup_cv=cv,
        converged=converged,
        cached=cached,
    )


def kind_fields(results: Mapping[str, LatencyResult], top1: Mapping[str, float]) -> dict[str, dict[str, float]]:
    """Each kind's own numbers, for ``TrialOutcome.kinds``: {kind: {field: value}} (``KIND_FIELDS``)."""
    return {
        kind: {
            "speedup": r.speedup,
            "speedup_ci_low": r.speedup_ci_low,
            "speedup_ci_high": r.speedup_ci_high,
            "latency_ms": r.latency_ms_p50,
            "baseline_latency_ms": r.baseline_latency_ms_p50,
            "top1_device": top1.get(kind, math.nan),
        }
        for kind, r in results.items()
    }


def kind_columns(kinds: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """``TrialOutcome.kinds`` as flat columns: ``speedup_ort_cpu``, ``latency_ms_cpu``, ..."""
    return {f"{field}_{kind_slug(kind)}": values.get(field) for kind, values in kinds.items() for field in KIND_FIELDS}
