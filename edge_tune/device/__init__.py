"""The edge device: honest, serialised, verifiable latency.

- ``timing``: interleaved A/B timing with an adaptive stopping rule
- ``profile``: per-layer latency from OpenVINO's counters, mapped to PyTorch modules
- ``runner``: ``DeviceRunner``, one OpenVINO device (plain Python)
- ``actor``: the ``EdgeDevice`` Ray actor that shares it between trials
"""

from edge_tune.device.actor import ACTOR_NAME, NAMESPACE, EdgeDevice, get_device, start_device
from edge_tune.device.profile import LayerTiming, module_name
from edge_tune.device.runner import (
    DeviceAccuracy,
    DeviceConfig,
    DeviceRunner,
    LatencyResult,
    ModelError,
    openvino_macs,
)
from edge_tune.device.timing import TimingPlan, interleave, median_ci

__all__ = [
    "ACTOR_NAME",
    "NAMESPACE",
    "DeviceAccuracy",
    "DeviceConfig",
    "DeviceRunner",
    "EdgeDevice",
    "LatencyResult",
    "LayerTiming",
    "ModelError",
    "TimingPlan",
    "get_device",
    "interleave",
    "median_ci",
    "module_name",
    "openvino_macs",
    "start_device",
]
