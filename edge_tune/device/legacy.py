"""``LegacyEngine``: OpenVINO 2021.4's Inference Engine API behind the ``Engine`` interface.

2021.4 is the last OpenVINO whose wheels (Python 3.6-3.9) carry the Neural
Compute Stick 2's ``MYRIAD`` plugin. Like ``engine``, this module imports only
the standard library, numpy and openvino, and keeps to Python 3.8 syntax: it
runs in the device server under that old interpreter.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np

from edge_tune.device.engine import Engine, inspect_graph, register_engine, unpack_ir
from edge_tune.device.profile import Counters, Profiler

__all__ = ["LegacyEngine"]


@register_engine
class LegacyEngine(Engine):
    """OpenVINO 2021.4 (Inference Engine API): the last runtime with the ``MYRIAD`` plugin."""

    api = "ie"
    _PRECISION: ClassVar[dict[str, str]] = {"FP32": "f32", "FP16": "f16", "BF16": "bf16", "I8": "i8", "U8": "u8"}

    def __init__(self, device: str, precision: str, threads: int) -> None:
        super().__init__(device, precision, threads)
        import ngraph
        from openvino import inference_engine

        self._ng = ngraph
        self._ie = inference_engine
        self.core = inference_engine.IECore()

    def _version(self) -> str:
        return str(self._ie.get_version())

    def _device_property(self, name: str) -> Any:
        return self.core.get_metric(self.device, name)

    def _read(self, onnx_bytes: bytes) -> Any:
        ir = unpack_ir(onnx_bytes)  # an IR from a newer OpenVINO than 2021.4 fails here, clearly
        model, weights = ir if ir is not None else (onnx_bytes, b"")
        return self.core.read_network(model=model, weights=weights, init_from_buffer=True)

    def _input_shape(self, model: Any) -> list[int] | None:
        return [int(d) for d in next(iter(model.input_info.values())).input_data.shape]

    def _graph(self, model: Any) -> dict[str, Any]:
        return inspect_graph(self._ng.function_from_cnn(model).get_ordered_ops(), lambda op: op._get_attributes())

    def _compile(self, model: Any, profile: bool) -> Any:
        config = {"PERF_COUNT": "YES" if profile else "NO"}
        if self.device == "CPU":
            # 2021.4 runs bf16 by default where the CPU has it; f32 must be asked for.
            config.update(
                CPU_THREADS_NUM=str(self.threads),
                CPU_THROUGHPUT_STREAMS="1",
                ENFORCE_BF16="YES" if self.precision == "bf16" else "NO",
            )
        return self.core.load_network(model, self.device, config=config, num_requests=1)

    def _runner(self, compiled: Any) -> Callable[[], object]:
        req = compiled.requests[0]
        next(iter(req.input_blobs.values())).buffer[:] = self._input

        def infer(_keep: Any = compiled) -> object:  # holds the network: see _classifier
            return req.infer()

        return infer

    def _classifier(self, compiled: Any) -> Callable[[np.ndarray], np.ndarray]:
        req = compiled.requests[0]
        blob = next(iter(req.input_blobs.values()))
        out = next(iter(req.output_blobs))

        def infer(x: np.ndarray, _keep: Any = compiled) -> np.ndarray:
            # _keep: a 2021.4 request fails (NOT_IMPLEMENTED) once its network is collected.
            blob.buffer[:] = x
            req.infer()
            return np.array(req.output_blobs[out].buffer[0])

        return infer

    def _runtime_ops(self, compiled: Any) -> list[Any]:
        return list(self._ng.function_from_cnn(compiled.get_exec_graph_info()).get_ordered_ops())

    def _precision(self, compiled: Any) -> str:
        kinds = Counter(
            str(op.get_rt_info()["runtimePrecision"])
            for op in self._runtime_ops(compiled)
            if str(op.get_rt_info()["layerType"]) == "Convolution"
        )
        top = kinds.most_common(1)[0][0] if kinds else ""
        return self._PRECISION.get(top, top.lower() or self.precision)

    def _profiler(self, compiled: Any) -> Profiler:
        req = compiled.requests[0]
        next(iter(req.input_blobs.values())).buffer[:] = self._input

        def infer(_keep: Any = compiled) -> float:  # _keep: see _classifier
            t0 = time.perf_counter_ns()
            req.infer()
            return (time.perf_counter_ns() - t0) / 1e6

        def counters() -> Counters:
            return {
                node: (c["real_time"] / 1e3, c["layer_type"], c["exec_type"])  # us -> ms
                for node, c in req.get_perf_counts().items()
                if c["status"] == "EXECUTED"
            }

        return infer, counters

    def _fusions(self, compiled: Any) -> dict[str, list[str]]:
        return {
            op.get_friendly_name(): [n for n in str(op.get_rt_info()["originalLayersNames"]).split(",") if n]
            for op in self._runtime_ops(compiled)
        }
