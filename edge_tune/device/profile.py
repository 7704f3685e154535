"""Per-layer latency (objective O4) from OpenVINO's profiling counters.

A compiled model with ``PERF_COUNT`` reports, per executed node, its time and
kernel (``exec_type``, e.g. ``brgconv_avx512_f32``). Its runtime model says
which original ONNX nodes each executed node fused (a convolution with its
ReLU and residual Add, say). ONNX node names carry the PyTorch module scope
(``/layer1/layer1.0/conv1/Conv``), from which the module name is rebuilt
(``layer1.0.conv1``). Batch norms never appear: the ONNX export folds them
into the convolutions.
"""

from __future__ import annotations

import re
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["NOT_LAYERS", "LayerTiming", "layers_from_counters", "module_name", "module_of", "profile_layers"]

NOT_LAYERS = ("Parameter", "Result", "Const", "Input", "Output")  # executed node types that are no layer


@dataclass(frozen=True)
class LayerTiming:
    node: str  # OpenVINO's executed node
    module: str  # the PyTorch module it comes from, or the node name when none
    node_type: str  # Convolution, MatMul, ...
    exec_type: str  # the kernel OpenVINO picked
    time_ms: float  # median over the profiled inferences
    fused: tuple[str, ...]  # other original layers folded into this node (modules or ops)


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
    """Per executed node: its sampled times (ms), (node type, exec type) and the original layers it fused."""
    layers = []
    for node, samples in times.items():
        node_type, exec_type = meta[node]
        if node_type in NOT_LAYERS:
            continue
        module = module_of(node, fused.get(node, ()))
        # A folded batch norm leaves a bias Add named like the convolution itself: not another layer.
        labels = (_label(n) for n in fused.get(node, ()))
        others = tuple(dict.fromkeys(lbl for lbl in labels if lbl is not None and lbl != module))
        layers.append(LayerTiming(node, module, node_type, exec_type, statistics.median(samples), others))
    return layers


def profile_layers(compiled: Any, feed: dict[int, Any], inferences: int = 10) -> list[LayerTiming]:
    """Run ``compiled`` (built with ``PERF_COUNT: True``, API 2.0) and return its executed nodes' timings."""
    req = compiled.create_infer_request()
    times: dict[str, list[float]] = {}
    meta: dict[str, tuple[str, str]] = {}
    for _ in range(inferences):
        req.infer(feed)
        for info in req.profiling_info:
            if str(info.status).endswith("EXECUTED") and "NOT_RUN" not in str(info.status):
                times.setdefault(info.node_name, []).append(info.real_time.total_seconds() * 1e3)
                meta[info.node_name] = (info.node_type, info.exec_type)
    return layers_from_counters(times, meta, _fusions(compiled))


def _fusions(compiled: Any) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for op in compiled.get_runtime_model().get_ordered_ops():
        info = op.get_rt_info()
        if "originalLayersNames" in info:
            names = info["originalLayersNames"].astype(str)
            out[op.get_friendly_name()] = [n for n in names.split(",") if n]
    return out
