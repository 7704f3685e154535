"""The model zoo: a registry of CNN constructors, filled by a decorator.

Every constructor takes ``num_classes`` (and, if it wants, ``in_channels``) and
returns an ``nn.Module`` that maps ``(N, C, H, W)`` images to ``(N, num_classes)``
logits. A user model is named ``package.module:function`` and follows the same
contract; a constructor without ``in_channels`` decides its own input channels
(``edge_tune.contract`` fits the data to them).

The zoo: ``resnet20``, ``resnet32``, ``resnet56`` (CIFAR ResNets), ``mobilenetv2``
(0.5 width, three downsamplings) and ``vgg11`` (half width, one hidden fully-connected layer),
for 32x32 inputs; ``resnet18``, ``mobilenet_v2`` and ``mobilenet_v3_small`` with torchvision's
parameter names and shapes, for 224x224 RGB inputs (``models.imagenet``).

>>> from edge_tune.models import create_model
>>> net = create_model("resnet20", num_classes=10, in_channels=1)
"""

from __future__ import annotations

import functools
import importlib
import inspect
from collections.abc import Callable
from typing import cast

import torch
from torch import nn

from edge_tune.errors import UserError

__all__ = [
    "ModelFn",
    "available_models",
    "create_model",
    "device_of",
    "fit_to_state_dict",
    "input_channels",
    "register_model",
]

ModelFn = Callable[..., nn.Module]
_REGISTRY: dict[str, ModelFn] = {}


def register_model(fn: ModelFn) -> ModelFn:
    """Register ``fn`` under its own name; used as a decorator."""
    _REGISTRY[fn.__name__] = fn
    return fn


def available_models() -> list[str]:
    return sorted(_REGISTRY)


def create_model(name: str, *, num_classes: int, in_channels: int) -> nn.Module:
    """Build a zoo model by name, or a user model by ``package.module:function``."""
    if ":" in name:
        fn = _import_user_model(name)
    elif name in _REGISTRY:
        fn = _REGISTRY[name]
    else:
        raise UserError(
            f"unknown model {name!r}; the zoo has {', '.join(available_models())}, "
            "or name your own as package.module:function"
        )
    kwargs = {"num_classes": num_classes, **({"in_channels": in_channels} if _takes(fn, "in_channels") else {})}
    try:
        model = fn(**kwargs)
    except Exception as exc:  # the user's constructor
        call = ", ".join(f"{k}={v}" for k, v in kwargs.items())
        raise UserError(f"model {name!r} raised {type(exc).__name__} when called with {call}: {exc}") from None
    if not isinstance(model, nn.Module):
        raise UserError(f"model {name!r} returned {type(model).__name__}, not a torch.nn.Module")
    return model


def _takes(fn: ModelFn, name: str) -> bool:
    """Whether ``fn`` accepts the keyword ``name`` (by name, or through ``**kwargs``)."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):  # a builtin or C callable: assume the full contract
        return True
    return any(p.name == name or p.kind is inspect.Parameter.VAR_KEYWORD for p in params)


def input_channels(model: nn.Module) -> int | None:
    """The channels the model's first convolution reads (None without one)."""
    first = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    return None if first is None else int(first.in_channels)


def device_of(model: nn.Module) -> torch.device:
    """Where ``model``'s parameters live (a trial fine-tunes on a GPU when Ray gave it one)."""
    p = next(model.parameters(), None)
    return torch.device("cpu") if p is None else p.device


def fit_to_state_dict(model: nn.Module, state_dict: dict[str, torch.Tensor]) -> nn.Module:
    """Shrink ``model``'s convolutions, batch norms and linear layers to the shapes in ``state_dict`` (the
    weights of a pruned copy of it), then load the weights: the pruned architecture rebuilt from its weights.

    Structured pruning only removes filters and channels, so every layer keeps its kind, kernel, stride
    and padding; a depthwise convolution stays depthwise (as many groups as channels).
    """
    for name, module in list(model.named_modules()):
        weight = state_dict.get(f"{name}.weight")
        if weight is None or tuple(weight.shape) == tuple(getattr(module, "weight", torch.empty(0)).shape):
            continue
        new: nn.Module
        if isinstance(module, nn.Conv2d):
            out_c, in_per_group = int(weight.shape[0]), int(weight.shape[1])
            depthwise = module.groups > 1 and module.groups == module.in_channels
            groups = out_c if depthwise else module.groups
            new = nn.Conv2d(
                in_per_group * groups,
                out_c,
                module.kernel_size,  # type: ignore[arg-type]
                module.stride,  # type: ignore[arg-type]
                module.padding,  # type: ignore[arg-type]
                module.dilation,  # type: ignore[arg-type]
                groups,
                bias=module.bias is not None,
                padding_mode=module.padding_mode,
            )
        elif isinstance(module, nn.BatchNorm2d):
            new = nn.BatchNorm2d(int(weight.shape[0]), module.eps, module.momentum, module.affine)
        elif isinstance(module, nn.Linear):
            new = nn.Linear(int(weight.shape[1]), int(weight.shape[0]), bias=module.bias is not None)
        else:
            raise ValueError(
                f"layer {name} ({type(module).__name__}) was resized; only Conv2d, BatchNorm2d "
                "and Linear layers can be rebuilt from their weights"
            )
        model.set_submodule(name, new)
    model.load_state_dict(state_dict)
    return model.eval()


def _import_user_model(spec: str) -> ModelFn:
    module_name, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # the user's module: whatever it raises on import is theirs to see
        raise UserError(f"model {spec!r}: cannot import module {module_name!r} ({type(exc).__name__}: {exc})") from None
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise UserError(f"model {spec!r}: module {module_name!r} has no function {attr!r}")
    if not (inspect.isfunction(fn) or inspect.isclass(fn) or isinstance(fn, functools.partial)):  # not os:system
        raise UserError(
            f"model {spec!r}: {type(fn).__name__} {attr!r} is not a Python function or class that builds a model; "
            "give package.module:function, a function taking num_classes= that returns an nn.Module"
        )
    return cast(ModelFn, fn)


# The zoo registers itself on import.
from edge_tune.models import imagenet as _imagenet  # noqa: E402,F401
from edge_tune.models import mobilenet as _mobilenet  # noqa: E402,F401
from edge_tune.models import resnet as _resnet  # noqa: E402,F401
from edge_tune.models import vgg as _vgg  # noqa: E402,F401
