"""PyTorch to ONNX, and the check that the file really has the pruned shapes (O0)."""

from __future__ import annotations

import hashlib
import io
from collections import Counter
from typing import Any, cast

import torch
from torch import nn

__all__ = ["ExportMismatch", "conv_shapes_onnx", "conv_shapes_torch", "structure_hash", "to_onnx", "verify_export"]

OPSET = 17


class ExportMismatch(RuntimeError):
    """The exported graph's convolutions differ from the PyTorch model's."""


def to_onnx(model: nn.Module, example: torch.Tensor) -> bytes:
    """Export ``model`` (eval mode, batch of ``example``) as ONNX bytes.

    Uses the TorchScript exporter: it folds batch norms into the
    convolutions and takes a fraction of a second, where the dynamo exporter
    takes seconds per trial for these small CNNs.
    """
    was_training = model.training
    model.eval()
    buf = io.BytesIO()
    with torch.no_grad():
        torch.onnx.export(
            model,
            (example,),
            cast(Any, buf),  # the TorchScript exporter writes to file objects too
            dynamo=False,
            opset_version=OPSET,
            input_names=["input"],
            output_names=["logits"],
            do_constant_folding=True,
        )
    model.train(was_training)
    return buf.getvalue()


def conv_shapes_torch(model: nn.Module) -> list[tuple[int, int, int, int]]:
    """(out, in/groups, kh, kw) of every Conv2d weight, sorted."""
    return sorted(tuple(m.weight.shape) for m in model.modules() if isinstance(m, nn.Conv2d))  # type: ignore[misc]


def conv_shapes_onnx(onnx_bytes: bytes) -> list[tuple[int, int, int, int]]:
    """(out, in/groups, kh, kw) of every Conv node's weight in the ONNX graph, sorted."""
    import onnx

    graph = onnx.load_from_string(onnx_bytes).graph
    shapes = {t.name: tuple(t.dims) for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant":
            shapes[node.output[0]] = tuple(node.attribute[0].t.dims)
    out = []
    for node in graph.node:
        if node.op_type == "Conv":
            dims = shapes.get(node.input[1])
            if dims is None or len(dims) != 4:
                raise ExportMismatch(f"ONNX Conv {node.name} has no constant 4-D weight")
            out.append(tuple(int(d) for d in dims))
    return sorted(out)  # type: ignore[arg-type]


def verify_export(onnx_bytes: bytes, model: nn.Module) -> list[tuple[int, int, int, int]]:
    """Raise ``ExportMismatch`` unless the ONNX convolutions equal the model's; return them."""
    want, got = conv_shapes_torch(model), conv_shapes_onnx(onnx_bytes)
    if want != got:
        missing = Counter(want) - Counter(got)
        extra = Counter(got) - Counter(want)
        raise ExportMismatch(
            f"exported ONNX does not match the pruned model: PyTorch-only conv shapes {dict(missing)}, "
            f"ONNX-only conv shapes {dict(extra)}"
        )
    return got


def structure_hash(onnx_bytes: bytes) -> str:
    """A hash of the graph's operators and tensor shapes, blind to weight values.

    Two configurations that round to the same channel counts get the same
    hash, so the device measures their latency once.
    """
    import onnx

    graph = onnx.load_from_string(onnx_bytes).graph
    shapes = {t.name: list(t.dims) for t in graph.initializer}
    h = hashlib.sha256()
    for node in graph.node:  # topological order; tensor names play no part
        if node.op_type == "Identity" and node.input[0] in shapes:
            # The exporter aliases equal constants (zero biases, say) through Identity
            # nodes; which ones depends on the values, so they are not structure.
            shapes[node.output[0]] = shapes[node.input[0]]
            continue
        attrs = sorted((a.name, str(onnx.helper.get_attribute_value(a))) for a in node.attribute if a.name != "value")
        inputs = [shapes.get(i, "x") for i in node.input]
        h.update(f"{node.op_type}{attrs}{inputs}".encode())
    return h.hexdigest()[:16]


def content_hash(onnx_bytes: bytes) -> str:
    """A hash of the whole file: structure and weights."""
    return hashlib.sha256(onnx_bytes).hexdigest()[:16]
