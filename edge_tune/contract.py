"""The model meets the data: input channels and output shape checked on one real batch, before anything runs.

A model whose first convolution wants 3 channels (an ImageNet-style network,
or a constructor without ``in_channels``) gets 1-channel data repeated over 3
channels, said once in the output; any other mismatch of channels, classes or
output shape is a ``UserError`` naming the model, the dataset and the shapes.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from edge_tune.data import Dataset, with_channels
from edge_tune.errors import UserError
from edge_tune.models import create_model, input_channels

__all__ = ["fit_data_to_model"]


def _note_collapse(name: str, layer: nn.Module, x: torch.Tensor, collapsed: list[str]) -> None:
    """A layer that downsamples a 1x1 map: the input was too small for this network."""
    stride = getattr(layer, "stride", 1)
    strided = max(stride) > 1 if isinstance(stride, tuple) else (stride or 1) > 1
    if strided and min(x.shape[-2:]) <= 1:
        collapsed.append(f"{name} with stride {stride} receives a {x.shape[-2]}x{x.shape[-1]} map")


def fit_data_to_model(model_name: str, data: Dataset, log: Callable[[str], None] = print) -> tuple[nn.Module, Dataset]:
    """The model built for ``data``, and ``data`` with the channels the model reads."""
    model = create_model(model_name, num_classes=data.num_classes, in_channels=data.in_channels)
    wanted = input_channels(model)
    if wanted is not None and wanted != data.in_channels:
        if not (wanted == 3 and data.in_channels == 1):
            raise UserError(
                f"model {model_name} reads {wanted}-channel images, dataset {data.name} has {data.in_channels} "
                "channel(s); only grey images can be repeated over 3 channels"
            )
        data = with_channels(data, 3)
        log(f"model {model_name} reads 3 channels: {data.name}'s grey images are repeated over 3 channels")
    x = data.val.images([0, 1])  # (2, C, H, W)
    collapsed: list[str] = []
    hooks = [
        m.register_forward_hook(lambda m, inp, out, name=name: _note_collapse(name, m, inp[0], collapsed))
        for name, m in model.named_modules()
        if isinstance(m, (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d))
    ]
    try:
        with torch.no_grad():
            out = model.eval()(x)
    except Exception as exc:  # the user's forward: any failure is theirs to see, with the shapes
        raise UserError(
            f"model {model_name} fails on {data.name}'s images of shape {tuple(x.shape)} "
            f"(--input-size): {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        ) from None
    finally:
        for h in hooks:
            h.remove()
    if collapsed:
        raise UserError(
            f"--input-size {x.shape[2]}x{x.shape[3]}: too small for model {model_name}, whose spatial size "
            f"collapses to 1x1 before it stops downsampling ({collapsed[0]}); give a larger input size"
        )
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (len(x), data.num_classes):
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise UserError(
            f"model {model_name} maps {data.name}'s images {tuple(x.shape)} to {shape}; it must return "
            f"logits of shape ({len(x)}, {data.num_classes}), one per class of {data.name}"
        )
    return model, data
