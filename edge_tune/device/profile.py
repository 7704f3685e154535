"""Per-layer latency (objective O4) from OpenVINO's profiling counters.

A compiled model with ``PERF_COUNT`` reports, per executed node, its time and
kernel (``exec_type``, e.g. ``brgconv_avx512_f32``). Its runtime model says
which original ONNX nodes each executed node fused (a convolution with its
ReLU and residual Add, say). ONNX node names carry the PyTorch module scope
(``/layer1/layer1.0/conv1/Conv``), from which the module name is rebuilt
(``layer1.0.conv1``). Batch norms never appear: the ONNX export folds them
into the convolutions.

What the counters hold is easy to misread. OpenVINO's CPU plugin keeps, per
node, a running total since the model was compiled and reports total / count
in whole microseconds: the first, cold inferences stay in every later reading.
(Read after ten inferences of a fresh compile, as this module once did, one
untouched layer read 0.59 ms where it takes 0.045.) So each profile is the
difference of two readings, after a warm-up and after the profiled inferences:
the mean time of each node over those inferences alone, to about a
microsecond. A fresh compile is profiled that way a few times (``repeats``);
each layer keeps the median of those means and their range as its spread,
so the spread holds what differs from one compile to the next too. A candidate
is profiled interleaved with the baseline, inference by inference
(``profile_interleaved``), as its end-to-end latency is: both see the same
machine. Each profiled inference's wall time is kept, so the layers' times can
be checked against the end-to-end time they split.
"""

from __future__ import annotations

import re
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Dict, Tuple  # noqa: UP035 (a runtime alias below must load on Python 3.8)

__all__ = [
    "NOT_LAYERS",
    "Counters",
    "LayerTiming",
    "Profile",
    "Profiler",
    "layers_from_counters",
    "module_name",
    "module_of",
    "profile_interleaved",
    "profile_layers",
]

NOT_LAYERS = ("Parameter", "Result", "Const", "Input", "Output")  # executed node types that are no layer


@dataclass(frozen=True)
class LayerTiming:
    node: str  # OpenVINO's executed node
    module: str  # the PyTorch module it comes from, or the node name when none
    node_type: str  # Convolution, MatMul, ...
    exec_type: str  # the kernel OpenVINO picked
    time_ms: float  # per inference: the median over repeats of the mean over each repeat's inferences
    fused: tuple[str, ...]  # other original layers folded into this node (modules or ops)
    time_ms_min: float = float("nan")  # its spread: the lowest and highest of the repeats' means
    time_ms_max: float = float("nan")


# A reading of a profiled model's counters: per executed node, (its mean time in ms over every inference since
# the model was compiled, node type, kernel).
Counters = Dict[str, Tuple[float, str, str]]  # noqa: UP006
# A freshly compiled, profiled model: (run one inference and return its wall time in ms, read the counters).
Profiler = Tuple[Callable[[], float], Callable[[], Counters]]  # noqa: UP006

RESOLUTION_MS = 1e-3  # the counters' unit: whole microseconds, rounded down


@dataclass
class Profile:
    """What one model's counters said over the repeats of a profile."""

    times: dict[str, list[float]] = field(default_factory=dict)  # per executed node, its mean (ms) in each repeat
    meta: dict[str, tuple[str, str]] = field(default_factory=dict)  # per node, (node type, kernel)
    wall_ms: list[float] = field(default_factory=list)  # each profiled inference, end to end
    window_wall_ms: list[float] = field(default_factory=list)  # per repeat, the mean of its inferences' wall times
    window_share: list[float] = field(default_factory=list)  # per repeat, the layers' sum over that mean

    def add_window(self, before: Counters, after: Counters, n_before: int, n_after: int) -> None:
        """The mean time of each node over inferences ``n_before`` + 1 ... ``n_after`` of one compile, from the
        running means read after ``n_before`` and after ``n_after`` of them.

        Each reading is a total over its inferences divided and rounded down to a microsecond; half a
        microsecond added back centres it, leaving an error within (n_before + n_after) / 2 us over
        n_after - n_before inferences.
        """
        window = n_after - n_before
        self.window_wall_ms.append(statistics.fmean(self.wall_ms[-window:]))
        for node, (mean_after, node_type, exec_type) in after.items():
            total_after = n_after * (mean_after + RESOLUTION_MS / 2)
            mean_before = before[node][0] if node in before else None
            total_before = n_before * (mean_before + RESOLUTION_MS / 2) if mean_before is not None else 0.0
            self.times.setdefault(node, []).append(max(total_after - total_before, 0.0) / window)
            self.meta[node] = (node_type, exec_type)
        layers = sum(v[-1] for node, v in self.times.items() if node in after and self.meta[node][0] not in NOT_LAYERS)
        self.window_share.append(layers / self.window_wall_ms[-1])

    def layers(self, fused: dict[str, list[str]]) -> list[LayerTiming]:
        return layers_from_counters(self.times, self.meta, fused)

    @property
    def end_to_end_ms(self) -> float:
        """End to end, as the layers' times are: the median over repeats of each one's mean."""
        return statistics.median(self.window_wall_ms) if self.window_wall_ms else float("nan")

    @property
    def layers_share(self) -> float:
        """How much of an inference the layers' counters account for: the median over repeats of their sum
        over the wall time of the same inferences (the rest is the runtime's own work between them)."""
        return statistics.median(self.window_share) if self.window_share else float("nan")


def profile_interleaved(
    compile_a: Callable[[], Profiler],
    compile_b: Callable[[], Profiler] | None,
    repeats: int,
    inferences: int,
    warmup: int,
    time_cap_s: float,
    clock: Callable[[], int] = time.perf_counter_ns,
) -> tuple[Profile, Profile]:
    """Profile A, and B alternating with it inference by inference (the first of each pair alternating too).

    Each repeat compiles both afresh, runs ``warmup`` inferences of each, reads the
    counters, runs up to ``inferences`` profiled ones and reads them again.
    ``time_cap_s`` bounds a slow model's whole profile (5 inferences a repeat at least).
    """
    a, b = Profile(), Profile()
    for _ in range(repeats):
        models = [(compile_a(), a)] + ([(compile_b(), b)] if compile_b is not None else [])
        for _ in range(warmup):
            for (infer, _), _ in models:
                infer()
        before = [counters() for (_, counters), _ in models]
        start, n = clock(), 0
        while n < inferences:
            for (infer, _), profile in models if n % 2 == 0 else models[::-1]:
                profile.wall_ms.append(infer())
            n += 1
            if n >= 5 and (clock() - start) / 1e9 >= time_cap_s / repeats:
                break
        for ((_, counters), profile), reading in zip(models, before):  # noqa: B905 (no strict= before 3.10)
            profile.add_window(reading, counters(), warmup, warmup + n)
    return a, b


def module_name(onnx_node: str) -> str:
    """``/layer2/layer2.0/downsample/downsample.0/Conv/WithoutBiases`` -> ``layer2.0.downsample.0``.

    The TorchScript exporter names each scope by the module's attribute path
    relative to its parent's parent (``layer1`` then ``layer1.0``), so a segment
    that extends the previous one replaces it, and any other is appended.
    Op-type segments (capitalised, such as ``Conv`` or ``Add``) end the path.
    """
    parts = [p for p in onnx_node.split("/") if p]
    path: list[str] = []
    for seg in parts:
        if seg[:1].isupper():
            break
        if path and seg.startswith(path[-1] + "."):
            path[-1] = seg
        else:
            path.append(seg)
    return ".".join(path) if path else onnx_node


def module_of(node: str, originals: Sequence[str]) -> str:
    """The module an executed node comes from: its own scoped name, else that of the first original layer with one.

    OpenVINO 2022+ names a fused node after a scoped ONNX node; 2021.4 calls it
    ``Convolution_63`` and lists the scoped names among the fused originals.
    """
    for name in (node, *originals):
        module = module_name(name)
        if module != name:
            return module
    return node


def _label(onnx_node: str) -> str | None:
    """How a fused original layer is listed: its module, with the op when that is not the module's own.

    Unscoped names (the runtime's own nodes) are not listed: they name no layer of the model.
    """
    module = module_name(onnx_node)
    if module == onnx_node:
        return None
    op = next((p for p in onnx_node.split("/") if p[:1].isupper()), "")
    op = re.sub(r"_output_\d+$", "", op)  # 2021.4 lists output tensors: /relu/Relu_output_0
    return module if op in ("Conv", "Gemm", "MatMul", "Relu", "") else f"{module}:{op}"


def layers_from_counters(
    times: dict[str, list[float]], meta: dict[str, tuple[str, str]], fused: dict[str, list[str]]
) -> list[LayerTiming]:
    """Per executed node: its times (ms; one per repeat), (node type, exec type) and the original layers it fused."""
    layers = []
    for node, samples in times.items():
        node_type, exec_type = meta[node]
        if node_type in NOT_LAYERS:
            continue
        module = module_of(node, fused.get(node, ()))
        # A folded batch norm leaves a bias Add named like the convolution itself: not another layer.
        labels = (_label(n) for n in fused.get(node, ()))
        others = tuple(dict.fromkeys(lbl for lbl in labels if lbl is not None and lbl != module))
        layers.append(
            LayerTiming(
                node, module, node_type, exec_type, statistics.median(samples), others,
                min(samples), max(samples),
            )
        )  # fmt: skip
    return layers


def profile_layers(compiled: Any, x: Any, tensor: Callable[[Any], Any]) -> Profiler:
    """``compiled`` (built with ``PERF_COUNT: True``, API 2.0) on ``x`` as a ``Profiler``; ``tensor`` makes the
    runtime's tensor of ``x``, bound once as for timing. One request: every inference of it is counted."""
    req = compiled.create_infer_request()
    req.set_input_tensor(tensor(x))

    def infer() -> float:
        t0 = time.perf_counter_ns()
        req.infer()
        return (time.perf_counter_ns() - t0) / 1e6

    def counters() -> Counters:
        return {
            info.node_name: (info.real_time.total_seconds() * 1e3, info.node_type, info.exec_type)
            for info in req.profiling_info
            if str(info.status).endswith("EXECUTED") and "NOT_RUN" not in str(info.status)
        }

    return infer, counters


def fusions(compiled: Any) -> dict[str, list[str]]:
    """Per executed node of ``compiled`` (API 2.0), the original layers it fused."""
    out: dict[str, list[str]] = {}
    for op in compiled.get_runtime_model().get_ordered_ops():
        info = op.get_rt_info()
        if "originalLayersNames" in info:
            names = info["originalLayersNames"].astype(str)
            out[op.get_friendly_name()] = [n for n in names.split(",") if n]
    return out
