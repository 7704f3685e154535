"""Compression: Distiller's schedule language, executed on torch-pruning.

- ``schedule``: the YAML schedule, parsed and validated (pruner classes, policies, AGP)
- ``pruning``: masks and physical removal on torch-pruning dependency groups
- ``scheduler``: ``CompressionScheduler``, the schedule run through fine-tuning
- ``lr``: the schedule's learning-rate schedulers
"""

from edge_tune.compression.executor import CompressionScheduler
from edge_tune.compression.pruning import Pruner, PruneReport, apply_pruners, count_macs_params, resolve_weights
from edge_tune.compression.schedule import (
    PRUNERS,
    Policy,
    PrunerSpec,
    Schedule,
    agp_target,
    check_schedule_fits,
    parse_schedule,
)

__all__ = [
    "PRUNERS",
    "CompressionScheduler",
    "Policy",
    "PruneReport",
    "Pruner",
    "PrunerSpec",
    "Schedule",
    "agp_target",
    "apply_pruners",
    "check_schedule_fits",
    "count_macs_params",
    "parse_schedule",
    "resolve_weights",
]
