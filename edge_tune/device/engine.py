"""OpenVINO runtimes behind one small interface, in this process or in another interpreter.

``Engine`` is the plug point between ``DeviceRunner`` (caching, statistics,
results) and a runtime. It loads a model and hands back a handle, sets the
baseline, times a model against the baseline, profiles it, and predicts the
validation images. Two engines drive OpenVINO directly:

- ``OpenVINOEngine``: API 2.0 (``openvino.Core``), OpenVINO 2022.1 and later;
- ``device.legacy.LegacyEngine``: the Inference Engine API of OpenVINO 2021.4, whose wheels
  (Python 3.6-3.9) are the last to carry the Neural Compute Stick 2's
  ``MYRIAD`` plugin.

``device.remote.RemoteEngine`` forwards the same calls, over the protocol in
``device.protocol``, to one of these running under another Python. That is
why this module, ``timing`` and ``profile`` import only the standard library,
numpy and openvino, and keep to Python 3.8 syntax: the other interpreter may
be an old one without torch or edge_tune installed.

Every value crossing the interface is plain data (dicts, lists, numbers,
strings, bytes, numpy arrays), so the remote engine is the same contract.

>>> engine = open_engine("CPU", "f32", threads=1)  # doctest: +SKIP
>>> engine.load(onnx_bytes)  # {"handle": 1, "input_shape": [1, 1, 32, 32], "macs": 40518272, "conv_shapes": [...]}
"""

from __future__ import annotations

import importlib.util
import platform
import struct
import time
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

import numpy as np

from edge_tune.device.profile import Profiler, fusions, profile_interleaved, profile_layers
from edge_tune.device.timing import TimingPlan, interleave

__all__ = [
    "ENGINES",
    "ORT_PREFIX",
    "Engine",
    "ModelError",
    "OpenVINOEngine",
    "inspect_graph",
    "open_engine",
    "pack_ir",
    "register_engine",
    "unpack_ir",
]


class ModelError(ValueError):
    """The ONNX model cannot be run here: corrupt, not ONNX, or the wrong input shape."""


def _clean(exc: BaseException) -> str:
    """OpenVINO's message without its C++ source locations."""
    return " ".join(ln.strip() for ln in str(exc).splitlines() if ln.strip() and "src/" not in ln)[:300]


IR_MAGIC = b"OVIR1\0"  # a model blob holding OpenVINO IR instead of ONNX


def pack_ir(xml: bytes, weights: bytes) -> bytes:
    """One blob for an OpenVINO IR (an INT8 model from NNCF, say): magic, uint64 len(xml), xml, bin."""
    return IR_MAGIC + struct.pack(">Q", len(xml)) + xml + weights


def unpack_ir(blob: bytes) -> tuple[bytes, bytes] | None:
    """(xml, bin) of a ``pack_ir`` blob, or None for anything else (ONNX)."""
    if not blob.startswith(IR_MAGIC):
        return None
    (n,) = struct.unpack(">Q", blob[len(IR_MAGIC) : len(IR_MAGIC) + 8])
    start = len(IR_MAGIC) + 8
    return blob[start : start + n], blob[start + n :]


class Engine:
    """One OpenVINO device, as seen through one runtime API.

    Subclasses implement the runtime primitives (``_read`` ... ``_profile``);
    the flow around them (handles, interleaved timing, prediction) is here.
    """

    api = ""

    def __init__(self, device: str, precision: str, threads: int) -> None:
        self.device = device  # an OpenVINO device name: CPU, GPU, NPU, MYRIAD, AUTO:...
        self.precision = precision  # f32 | f16 | bf16
        self.threads = threads  # CPU inference threads
        self._models: dict[int, Any] = {}
        self._next = 0
        self._baseline: Any = None
        self._baseline_model: Any = None  # the baseline as read, compiled afresh for each profile
        self._input: np.ndarray | None = None  # (1, C, H, W) float32, the timed input
        self._classifiers: dict[int, Callable[[np.ndarray], np.ndarray]] = {}  # compiled once per loaded model

    # -- the interface -------------------------------------------------------------------------
    def describe(self) -> dict[str, Any]:
        """Runtime version, API, Python version, available devices and the device's full name."""
        return {
            "runtime": self._version(),
            "api": self.api,
            "python": platform.python_version(),
            "devices": self._devices(),
            "device_name": self._full_name(),
        }

    def load(self, onnx_bytes: bytes) -> dict[str, Any]:
        """Read a model (ONNX, or an OpenVINO IR packed by ``pack_ir``): its handle, static input
        shape (or None), and what ``inspect_graph`` sees."""
        try:
            model = self._read(onnx_bytes)
        except Exception as exc:  # each runtime raises RuntimeError subclasses of its own
            kind = "OpenVINO IR" if onnx_bytes.startswith(IR_MAGIC) else "ONNX"
            raise ModelError(f"the device cannot read this model as {kind}: " + _clean(exc)) from None
        self._next += 1
        self._models[self._next] = model
        return {"handle": self._next, "input_shape": self._input_shape(model), **self._graph(model)}

    def release(self, handle: int) -> None:
        self._models.pop(handle, None)
        self._classifiers.pop(handle, None)

    def set_baseline(self, handle: int, x: np.ndarray, profile: dict[str, Any]) -> list[dict[str, Any]]:
        """Compile the baseline that ``measure`` interleaves against; returns its per-layer profile.

        ``profile``: ``repeats``, ``inferences``, ``warmup`` and ``time_cap_s`` of ``profile.profile_interleaved``.
        """
        model = self._models[handle]
        self._baseline = self._compile(model, profile=False)
        self._baseline_model = model
        self._input = np.ascontiguousarray(x, dtype=np.float32)
        last: list[Any] = []
        alone, _ = profile_interleaved(self._profiled(model, last), None, **profile)
        return [asdict(lt) for lt in alone.layers(self._fusions(last[0]))]

    def measure(self, handle: int, plan: dict[str, Any], profile: dict[str, Any] | None) -> dict[str, Any]:
        """Interleave the model against the baseline (``timing.interleave``), then profile both, interleaved
        (unless ``profile`` is None)."""
        if self._baseline is None:
            raise RuntimeError("set_baseline must come before measure")
        model = self._models[handle]
        start = time.perf_counter()
        compiled = self._compile(model, profile=False)
        compile_s = time.perf_counter() - start
        samples = interleave(self._runner(compiled), self._runner(self._baseline), TimingPlan(**plan))
        out = asdict(samples)
        out.update(compile_s=compile_s, precision=self._precision(compiled))
        if profile is None:
            return out
        last_cand: list[Any] = []
        last_base: list[Any] = []
        cand, base = profile_interleaved(
            self._profiled(model, last_cand), self._profiled(self._baseline_model, last_base), **profile
        )
        out.update(
            layers=[asdict(lt) for lt in cand.layers(self._fusions(last_cand[0]))],
            baseline_layers=[asdict(lt) for lt in base.layers(self._fusions(last_base[0]))],
            profiled_ms=cand.end_to_end_ms,
            baseline_profiled_ms=base.end_to_end_ms,
            layers_share=cand.layers_share,
            baseline_layers_share=base.layers_share,
        )
        return out

    def _profiled(self, model: Any, last: list[Any]) -> Callable[[], Profiler]:
        """A fresh profiled compile of ``model`` per call (its counters start at zero), kept in ``last`` so that
        its fusions are read from a compile the profile made, not from another one."""

        def make() -> Profiler:
            last[:] = [self._compile(model, profile=True)]
            return self._profiler(last[0])

        return make

    def predict(self, handle: int, images: np.ndarray) -> np.ndarray:
        """Logits (N, classes) of the compiled model for ``images`` (N, C, H, W), one image at a time (batch 1,
        as deployed). The model is compiled on the first call and kept until ``release``, so a validation set
        sent in chunks is classified by one compiled model."""
        if handle not in self._classifiers:
            self._classifiers[handle] = self._classifier(self._compile(self._models[handle], profile=False))
        infer = self._classifiers[handle]
        x = np.ascontiguousarray(images, dtype=np.float32)
        return np.stack([infer(x[i : i + 1]) for i in range(len(x))])

    def _devices(self) -> list[str]:
        return list(self.core.available_devices)

    def _full_name(self) -> str:
        if self.device not in self.core.available_devices:
            return self.device  # AUTO:..., MULTI:...: no one device to name
        return str(self._device_property("FULL_DEVICE_NAME"))

    # -- runtime primitives --------------------------------------------------------------------
    core: Any  # the runtime's Core (API 2.0) or IECore (2021.4)

    def _version(self) -> str:
        raise NotImplementedError

    def _device_property(self, name: str) -> Any:
        raise NotImplementedError

    def _read(self, onnx_bytes: bytes) -> Any:
        raise NotImplementedError

    def _input_shape(self, model: Any) -> list[int] | None:
        raise NotImplementedError

    def _graph(self, model: Any) -> dict[str, Any]:
        """``inspect_graph`` of the model's ops."""
        raise NotImplementedError

    def _compile(self, model: Any, profile: bool) -> Any:
        raise NotImplementedError

    def _runner(self, compiled: Any) -> Callable[[], object]:
        """A callable running one inference on ``self._input``, bound once."""
        raise NotImplementedError

    def _classifier(self, compiled: Any) -> Callable[[np.ndarray], np.ndarray]:
        """A callable from one image (1, C, H, W) to its logits (classes,)."""
        raise NotImplementedError

    def _precision(self, compiled: Any) -> str:
        raise NotImplementedError

    def _profiler(self, compiled: Any) -> Profiler:
        """``compiled`` (profiling on) on ``self._input``: a callable running one inference and returning its
        wall time (ms), and one reading its counters (``profile.Counters``)."""
        raise NotImplementedError

    def _fusions(self, compiled: Any) -> dict[str, list[str]]:
        """Per executed node of ``compiled``, the original layers it fused."""
        raise NotImplementedError


def inspect_graph(ops: Any, attributes: Callable[[Any], dict[str, Any]]) -> dict[str, Any]:
    """What the runtime's own graph says the network is (O0).

    ``macs``: conv and fully-connected MACs of one image; ``conv_shapes``: every
    convolution's weight as (out, in/groups, kh, kw), sorted, as
    ``export.conv_shapes_torch`` lists PyTorch's.
    """
    total, shapes = 0, []
    for op in ops:
        kind = op.get_type_name()
        if kind in ("Convolution", "GroupConvolution"):
            out = list(op.get_output_partial_shape(0).to_shape())  # (N, C_out, H, W)
            w = list(
                op.input(1).get_partial_shape().to_shape()
            )  # (C_out, C_in, kh, kw) or (G, C_out/G, C_in/G, kh, kw)
            total += int(np.prod(out[1:])) * int(np.prod(w[-3:]))
            shapes.append([int(np.prod(w[:-3])), *(int(d) for d in w[-3:])])
        elif kind == "MatMul":
            out = list(op.get_output_partial_shape(0).to_shape())  # (N, features)
            a = list(op.input(0).get_partial_shape().to_shape())
            k = a[-2] if attributes(op).get("transpose_a") else a[-1]
            total += int(np.prod(out[1:])) * int(k)
    return {"macs": total, "conv_shapes": sorted(shapes)}


# api -> Engine subclass, in the order ``open_engine`` tries them: the first whose runtime this
# interpreter has serves. A new runtime is a new subclass with ``@register_engine``.
ENGINES: dict[str, type[Engine]] = {}


def register_engine(cls: type[Engine]) -> type[Engine]:
    ENGINES[cls.api] = cls
    return cls


@register_engine
class OpenVINOEngine(Engine):
    """OpenVINO 2022.1 and later (API 2.0)."""

    api = "2.0"

    def __init__(self, device: str, precision: str, threads: int) -> None:
        super().__init__(device, precision, threads)
        import openvino

        if not hasattr(openvino, "Core"):  # 2022.x keeps API 2.0 in openvino.runtime
            import openvino.runtime as openvino  # type: ignore[no-redef]
        self._ov = openvino
        self.core = self._ov.Core()

    def _version(self) -> str:
        return str(self._ov.get_version())

    def _device_property(self, name: str) -> Any:
        return self.core.get_property(self.device, name)

    def _read(self, onnx_bytes: bytes) -> Any:
        ir = unpack_ir(onnx_bytes)
        if ir is not None:
            return self.core.read_model(model=ir[0].decode(), weights=self._ov.Tensor(np.frombuffer(ir[1], np.uint8)))
        return self.core.read_model(onnx_bytes)

    def _input_shape(self, model: Any) -> list[int] | None:
        shape = model.input(0).get_partial_shape()
        return [int(d) for d in shape.to_shape()] if shape.is_static else None

    def _graph(self, model: Any) -> dict[str, Any]:
        return inspect_graph(model.get_ordered_ops(), lambda op: op.get_attributes())

    def _compile(self, model: Any, profile: bool) -> Any:
        props: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": self.precision}
        if self.device == "CPU":
            props.update({"INFERENCE_NUM_THREADS": self.threads, "NUM_STREAMS": 1})
        if profile:
            props["PERF_COUNT"] = True
        return self.core.compile_model(model, self.device, props)

    def _runner(self, compiled: Any) -> Callable[[], object]:
        req = compiled.create_infer_request()
        # Bound once: passing the input to every infer() call adds ~30 us of
        # Python-side copying per inference, a tenth of a small model's latency.
        req.set_input_tensor(self._ov.Tensor(self._input))
        return req.infer

    def _classifier(self, compiled: Any) -> Callable[[np.ndarray], np.ndarray]:
        req = compiled.create_infer_request()
        return lambda x: np.array(req.infer({0: x})[0][0])

    def _precision(self, compiled: Any) -> str:
        try:
            return str(compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name())
        except (RuntimeError, AttributeError):
            return self.precision

    def _profiler(self, compiled: Any) -> Profiler:
        return profile_layers(compiled, self._input, self._ov.Tensor)

    def _fusions(self, compiled: Any) -> dict[str, list[str]]:
        return fusions(compiled)


ORT_PREFIX = "ort:"  # a device ONNX Runtime drives: ort:CPU (device.ort)


def open_engine(device: str, precision: str, threads: int, api: str = "") -> Engine:
    """ONNX Runtime's engine for an ``ort:`` device; else the first OpenVINO engine (or the one named by
    ``api``) whose runtime this interpreter has."""
    # Imported for what they register: OpenVINO 2021.4's engine and ONNX Runtime's.
    import edge_tune.device.legacy
    import edge_tune.device.ort  # noqa: F401

    if device.startswith(ORT_PREFIX):
        if importlib.util.find_spec("onnxruntime") is None:
            raise ImportError(f"{device}: onnxruntime is not installed in this interpreter (pip install onnxruntime)")
        return ENGINES["ort"](device, precision, threads)
    if importlib.util.find_spec("openvino") is None:
        raise ImportError("openvino is not installed in this interpreter (pip install openvino)")
    openvino_apis = [a for a in ENGINES if a != "ort"]
    if api and api not in openvino_apis:
        raise ImportError(f"no OpenVINO engine for the API {api!r}; known: {', '.join(openvino_apis)}")
    for cls in [ENGINES[api]] if api else [ENGINES[a] for a in openvino_apis]:
        try:
            return cls(device, precision, threads)
        except ImportError:  # this runtime's API is not in the installed openvino
            continue
    raise ImportError(f"the installed openvino offers none of the APIs {', '.join(openvino_apis)}")
