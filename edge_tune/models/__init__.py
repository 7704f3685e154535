"""The model zoo: a registry of CNN constructors, filled by a decorator.

Every constructor takes ``num_classes`` and ``in_channels`` and returns an
``nn.Module`` that maps ``(N, in_channels, H, W)`` images to ``(N, num_classes)``
logits. A user model is named ``package.module:function`` and must follow the
same contract.

The zoo: ``resnet20``, ``resnet32``, ``resnet56`` (CIFAR ResNets), ``mobilenetv2``
(0.5 width, three downsamplings) and ``vgg11`` (half width, one hidden fully-connected layer).

>>> from edge_tune.models import create_model
>>> net = create_model("resnet20", num_classes=10, in_channels=1)
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

from torch import nn

from edge_tune.errors import UserError

__all__ = ["ModelFn", "available_models", "create_model", "register_model"]

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
    model = fn(num_classes=num_classes, in_channels=in_channels)
    if not isinstance(model, nn.Module):
        raise UserError(f"model {name!r} returned {type(model).__name__}, not a torch.nn.Module")
    return model


def _import_user_model(spec: str) -> ModelFn:
    module_name, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise UserError(f"model {spec!r}: cannot import module {module_name!r} ({exc})") from exc
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise UserError(f"model {spec!r}: module {module_name!r} has no function {attr!r}")
    return fn


# The zoo registers itself on import.
from edge_tune.models import mobilenet as _mobilenet  # noqa: E402,F401
from edge_tune.models import resnet as _resnet  # noqa: E402,F401
from edge_tune.models import vgg as _vgg  # noqa: E402,F401
