"""``OrtEngine``: ONNX Runtime behind the ``Engine`` interface (``--device ort:CPU``).

A device is named ``ort:<provider>``, the execution provider without its
``ExecutionProvider`` suffix: ``ort:CPU`` here; ``ort:CUDA`` or
``ort:TensorRT`` on a Jetson, ``ort:ACL`` or ``ort:XNNPACK`` on an ARM board,
wherever that interpreter's onnxruntime build carries them. Only f32: the
providers' reduced precisions come from the model (a quantised ONNX), not
from a hint, and an INT8 model from NNCF is OpenVINO IR, which ONNX Runtime
does not read.

Per-layer times come from ONNX Runtime's profiler, which records every
kernel of every run and writes the trace once, when profiling ends. So a
reading of the counters is lazy (``_Reading``): both readings of a profile
window are taken from the one trace when the second is read. Each executed
kernel is named after the original ONNX node it grew from
(``/layer1/layer1.0/conv1/Conv``, found through the tensor its name carries),
and the elementwise nodes it absorbed (ReLU, the residual Add) are its
fusions, as OpenVINO's counters are read. That needs the ``onnx`` package
beside onnxruntime; without it, names stay ONNX Runtime's own.

Like ``engine``, this module keeps to Python 3.8 syntax and imports only the
standard library, numpy and the runtime: it may run in the device server
under another interpreter.
"""

from __future__ import annotations

import bisect
import json
import os
import platform
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import numpy as np

from edge_tune.device.engine import IR_MAGIC, Engine, register_engine
from edge_tune.device.engine import ORT_PREFIX as PREFIX
from edge_tune.device.profile import Counters, Profiler

__all__ = ["PREFIX", "OrtEngine", "available_devices", "provider_of"]

SUFFIX = "ExecutionProvider"
ELEMENTWISE = ("Relu", "Clip", "Add", "Sum", "Sigmoid", "HardSigmoid", "HardSwish", "LeakyRelu", "BatchNormalization")
NODE_TYPES = {"Conv": "Convolution", "FusedConv": "Convolution", "Gemm": "FullyConnected", "MatMul": "FullyConnected"}


def provider_of(device: str) -> str:
    """``ort:CPU`` -> ``CPUExecutionProvider``."""
    name = device[len(PREFIX) :] if device.startswith(PREFIX) else device
    return name if name.endswith(SUFFIX) else name + SUFFIX


def _device_of(provider: str) -> str:
    return PREFIX + (provider[: -len(SUFFIX)] if provider.endswith(SUFFIX) else provider)


def available_devices(onnxruntime: Any) -> list[str]:
    """The ``ort:`` device of every execution provider this onnxruntime build has."""
    return [_device_of(p) for p in onnxruntime.get_available_providers()]


class _Graph:
    """The original ONNX graph, read with ``onnx`` where it is installed: producers, consumers, shapes."""

    def __init__(self, onnx_bytes: bytes) -> None:
        self.nodes: dict[str, Any] = {}  # node name -> NodeProto
        self.producer: dict[str, str] = {}  # tensor -> the node writing it
        self.consumers: dict[str, list[str]] = {}  # tensor -> the nodes reading it
        self.order: list[str] = []
        self.macs = 0
        self.conv_shapes: list[list[int]] = []
        try:
            import onnx
            from onnx import numpy_helper, shape_inference
        except ImportError:
            return
        model = onnx.load_from_string(onnx_bytes)
        try:
            model = shape_inference.infer_shapes(model)
        except Exception:  # shapes are only needed for MACs; names still resolve
            pass
        shapes: dict[str, list[int]] = {}
        for vi in list(model.graph.value_info) + list(model.graph.output) + list(model.graph.input):
            dims = [d.dim_value for d in vi.type.tensor_type.shape.dim]
            if dims and all(d > 0 for d in dims):
                shapes[vi.name] = dims
        weights = {t.name: list(numpy_helper.to_array(t).shape) for t in model.graph.initializer}
        for k, node in enumerate(model.graph.node):
            name = node.name or f"{node.op_type}_{k}"
            self.nodes[name] = node
            self.order.append(name)
            for t in node.output:
                self.producer[t] = name
            for t in node.input:
                self.consumers.setdefault(t, []).append(name)
            self._count(node, shapes, weights)

    def _count(self, node: Any, shapes: dict[str, list[int]], weights: dict[str, list[int]]) -> None:
        """Conv and fully-connected MACs of one image, and each convolution's weight, as ``inspect_graph``."""
        if node.op_type == "Conv" and len(node.input) > 1 and node.input[1] in weights:
            w = weights[node.input[1]]  # (C_out, C_in/groups, kh, kw)
            self.conv_shapes.append([int(d) for d in w])
            out = shapes.get(node.output[0])
            if out:
                self.macs += int(np.prod(out[1:])) * int(np.prod(w[1:]))
        elif node.op_type in ("Gemm", "MatMul") and len(node.input) > 1:
            out = shapes.get(node.output[0])
            a = shapes.get(node.input[0]) or weights.get(node.input[0])
            if out and a:
                trans_a = any(at.name == "transA" and at.i for at in node.attribute)
                k = a[-2] if trans_a else a[-1]
                self.macs += int(np.prod(out[1:])) * int(k)

    def root(self, executed: str) -> tuple[str, list[str]]:
        """The original node an executed kernel grew from, and the elementwise nodes between them.

        ONNX Runtime keeps an original node's name, or names a rewritten one after a tensor
        (``/layer1/layer1.0/relu1/Relu_output_0_nchwc``: the conv that now writes that tensor)."""
        if executed in self.nodes:
            name = executed
        else:
            tensor = executed
            for suffix in ("_nchwc", "_token"):
                if tensor.endswith(suffix):
                    tensor = tensor[: -len(suffix)]
            if tensor not in self.producer:
                return executed, []
            name = self.producer[tensor]
        chain: list[str] = []
        while self.nodes[name].op_type in ELEMENTWISE:
            inputs = [self.producer[t] for t in self.nodes[name].input if t in self.producer]
            if not inputs:
                break
            chain.append(name)
            name = inputs[0]
        return name, chain

    def downstream(self, name: str, taken: set[str]) -> list[str]:
        """Elementwise nodes after ``name``, each its input's only reader, that no kernel ran on its own."""
        out: list[str] = []
        while True:
            readers = self.consumers.get(self.nodes[name].output[0], []) if self.nodes[name].output else []
            if len(readers) != 1 or readers[0] in taken or self.nodes[readers[0]].op_type not in ELEMENTWISE:
                return out
            name = readers[0]
            out.append(name)


class _Model:
    def __init__(self, onnx_bytes: bytes, inputs: Any, outputs: Any) -> None:
        self.onnx = onnx_bytes
        self.input, self.output = inputs[0], outputs[0]
        self.graph = _Graph(onnx_bytes)


class _Trace:
    """One profiled session's kernels, per run: read once, when profiling ends."""

    def __init__(self, session: Any, graph: _Graph) -> None:
        self.session, self.graph = session, graph
        self.runs: list[dict[str, float]] | None = None  # per run, per executed node: ms
        self.order: list[str] = []  # executed nodes, in the order they first ran
        self.meta: dict[str, tuple[str, str]] = {}
        self.fused: dict[str, list[str]] = {}

    def _read(self) -> list[dict[str, float]]:
        if self.runs is not None:
            return self.runs
        path = self.session.end_profiling()
        try:
            with open(path) as f:
                events = json.load(f)
        finally:
            os.remove(path)
        starts = sorted(e["ts"] for e in events if e.get("name") == "model_run")
        runs: list[dict[str, float]] = [{} for _ in starts]
        executed: list[str] = []
        roots: dict[str, str] = {}
        for e in events:
            if e.get("cat") != "Node" or not str(e.get("name", "")).endswith("_kernel_time") or not starts:
                continue
            raw = e["name"][: -len("_kernel_time")]
            if raw not in roots:
                root, chain = self.graph.root(raw)
                roots[raw] = root
                executed.append(root)
                self.fused[root] = chain
                op = str(e.get("args", {}).get("op_name", ""))
                provider = str(e.get("args", {}).get("provider", ""))
                self.meta[root] = (NODE_TYPES.get(op, op), f"{op} ({raw}, {provider})" if raw != root else op)
            k = bisect.bisect_right(starts, e["ts"]) - 1
            if k >= 0:
                runs[k][roots[raw]] = runs[k].get(roots[raw], 0.0) + float(e["dur"]) / 1e3
        taken = set(executed) | {n for chain in self.fused.values() for n in chain}
        for root in reversed(executed):  # an Add of two convolutions' outputs runs in the later one
            if root in self.graph.nodes:
                more = self.graph.downstream(root, taken)
                taken.update(more)
                self.fused[root] = self.fused[root] + more
        self.runs, self.order = runs, executed
        return runs

    def means(self, n: int) -> Counters:
        """Per executed node, its mean time (ms) over the first ``n`` runs, as OpenVINO's running counters."""
        runs = self._read()[:n]
        if not runs:
            return {}
        return {node: (sum(r.get(node, 0.0) for r in runs) / len(runs), *self.meta[node]) for node in self.order}


class _Reading(Mapping):  # type: ignore[type-arg]
    """Counters as they were after ``runs`` inferences, computed when first looked at."""

    def __init__(self, trace: _Trace, runs: int) -> None:
        self._trace, self._runs = trace, runs
        self._data: Counters | None = None

    def _get(self) -> Counters:
        if self._data is None:
            self._data = self._trace.means(self._runs)
        return self._data

    def __getitem__(self, key: str) -> tuple[float, str, str]:
        return self._get()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._get())

    def __len__(self) -> int:
        return len(self._get())


class _Compiled:
    def __init__(self, session: Any, model: _Model, profiled: bool) -> None:
        self.session, self.model = session, model
        self.trace = _Trace(session, model.graph) if profiled else None


@register_engine
class OrtEngine(Engine):
    """ONNX Runtime, one execution provider (``ort:CPU``)."""

    api = "ort"

    def __init__(self, device: str, precision: str, threads: int) -> None:
        super().__init__(device, precision, threads)
        import onnxruntime

        if precision != "f32":
            raise ValueError(f"ONNX Runtime runs a model at the precision it was exported in: f32, not {precision}")
        self._ort = onnxruntime
        self.provider = provider_of(device)
        # Profiler traces: ONNX Runtime adds a timestamp to this prefix; each file is removed once read.
        self._trace_prefix = os.path.join(tempfile.gettempdir(), f"edge_tune_ort_{os.getpid()}_{id(self)}")

    def _version(self) -> str:
        return "ONNX Runtime " + str(self._ort.__version__)

    def _devices(self) -> list[str]:
        return available_devices(self._ort)

    def _full_name(self) -> str:
        cpu = platform.processor() or platform.machine()
        try:
            with open("/proc/cpuinfo") as f:
                cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), cpu)
        except OSError:
            pass
        return f"{self.provider} on {cpu}"

    def _session(self, onnx_bytes: bytes, profile: bool) -> Any:
        o = self._ort.SessionOptions()
        o.intra_op_num_threads = self.threads
        o.inter_op_num_threads = 1
        o.execution_mode = self._ort.ExecutionMode.ORT_SEQUENTIAL
        o.graph_optimization_level = self._ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        o.log_severity_level = 3
        if profile:
            o.enable_profiling = True
            o.profile_file_prefix = self._trace_prefix
        return self._ort.InferenceSession(onnx_bytes, o, providers=[self.provider])

    def _read(self, onnx_bytes: bytes) -> Any:
        if onnx_bytes.startswith(IR_MAGIC):
            raise ValueError("ONNX Runtime reads ONNX; this is OpenVINO IR (an INT8 model): use an OpenVINO device")
        session = self._session(onnx_bytes, profile=False)  # reading it checks it
        return _Model(onnx_bytes, session.get_inputs(), session.get_outputs())

    def _input_shape(self, model: Any) -> list[int] | None:
        shape = model.input.shape
        return [int(d) for d in shape] if all(isinstance(d, int) for d in shape) else None

    def _graph(self, model: Any) -> dict[str, Any]:
        return {"macs": model.graph.macs, "conv_shapes": sorted(model.graph.conv_shapes)}

    def _compile(self, model: Any, profile: bool) -> Any:
        return _Compiled(self._session(model.onnx, profile), model, profile)

    def _runner(self, compiled: Any) -> Callable[[], object]:
        binding = compiled.session.io_binding()  # bound once, as OpenVINO's request is
        binding.bind_cpu_input(compiled.model.input.name, self._input)
        binding.bind_output(compiled.model.output.name)
        session = compiled.session
        return lambda: session.run_with_iobinding(binding)

    def _classifier(self, compiled: Any) -> Callable[[np.ndarray], np.ndarray]:
        session, name = compiled.session, compiled.model.input.name
        return lambda x: np.array(session.run(None, {name: x})[0][0])

    def _precision(self, compiled: Any) -> str:
        return "f32"

    def _profiler(self, compiled: Any) -> Profiler:
        infer_once = self._runner(compiled)
        count = [0]

        def infer() -> float:
            t0 = time.perf_counter_ns()
            infer_once()
            count[0] += 1
            return (time.perf_counter_ns() - t0) / 1e6

        def counters() -> Counters:
            return _Reading(compiled.trace, count[0])  # type: ignore[return-value]

        return infer, counters

    def _fusions(self, compiled: Any) -> dict[str, list[str]]:
        if compiled.trace is None:
            return {}
        compiled.trace._read()
        return {node: list(chain) for node, chain in compiled.trace.fused.items()}
