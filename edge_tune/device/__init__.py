"""The edge device: honest, serialised, verifiable latency.

- ``timing``: interleaved A/B timing with an adaptive stopping rule
- ``profile``: per-layer latency from OpenVINO's counters, mapped to PyTorch modules
- ``engine``: the OpenVINO runtimes (API 2.0, and 2021.4's for MYRIAD) behind one interface
- ``ort``: ONNX Runtime behind the same interface (``--device ort:CPU``)
- ``protocol``, ``remote``: that interface served by another interpreter (``--device-python``)
- ``runner``: ``DeviceRunner``, one OpenVINO device (plain Python)
- ``actor``: the ``EdgeDevice`` Ray actor that shares it between trials
"""

from edge_tune.device.actor import ACTOR_NAME, NAMESPACE, EdgeDevice, get_device, start_device
from edge_tune.device.engine import ENGINES, Engine, ModelError, OpenVINOEngine, open_engine, register_engine
from edge_tune.device.legacy import LegacyEngine
from edge_tune.device.ort import OrtEngine
from edge_tune.device.profile import LayerTiming, module_name
from edge_tune.device.remote import EngineDied, RemoteEngine
from edge_tune.device.runner import DeviceAccuracy, DeviceConfig, DeviceRunner, LatencyResult
from edge_tune.device.timing import TimingPlan, interleave, median_ci

__all__ = [
    "ACTOR_NAME",
    "ENGINES",
    "NAMESPACE",
    "DeviceAccuracy",
    "DeviceConfig",
    "DeviceRunner",
    "EdgeDevice",
    "Engine",
    "EngineDied",
    "LatencyResult",
    "LayerTiming",
    "LegacyEngine",
    "ModelError",
    "OpenVINOEngine",
    "OrtEngine",
    "RemoteEngine",
    "TimingPlan",
    "get_device",
    "interleave",
    "median_ci",
    "module_name",
    "open_engine",
    "register_engine",
    "start_device",
]
