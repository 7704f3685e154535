"""Compression: Distiller's schedule language, executed on torch-pruning."""

from edge_tune.compression.pruning import PruneReport, apply_pruners, count_macs_params, resolve_weights
from edge_tune.compression.schedule import Policy, PrunerSpec, Schedule, parse_schedule

__all__ = [
    "Policy",
    "PruneReport",
    "PrunerSpec",
    "Schedule",
    "apply_pruners",
    "count_macs_params",
    "parse_schedule",
    "resolve_weights",
]
