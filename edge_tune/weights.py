"""Trained weights the user brings (``--weights FILE``): read without running anyone's code, checked strictly.

Accepted: a plain ``state_dict`` (``torch.save(model.state_dict(), FILE)``), or a
checkpoint dict holding one under ``state_dict`` (Distiller, Lightning),
``model_state_dict``, ``model`` (torchvision's reference scripts) or ``net``.
A ``module.`` prefix (``nn.DataParallel``, Distiller) is stripped from every key.

The file is read with ``torch.load(weights_only=True)``: tensors, numbers,
strings and containers only. Other objects a checkpoint holds beside its state
dict (Distiller's ``thinning_recipes``, an optimizer's class) are read as inert
stand-ins, never as the classes they name, so no code of the file's runs; a
file whose weights are inside such objects (a whole pickled ``nn.Module``) is
refused with how to save a plain state dict instead. A thinned Distiller
checkpoint holds the thinned shapes: it does not fit the full architecture,
and the mismatch is listed. The state dict must then fit the model exactly:
missing, unexpected and mis-shaped keys are listed, the first few of each.

>>> state = read_state_dict(Path("resnet20.pt"))  # doctest: +SKIP
>>> check_fits(state, create_model("resnet20", num_classes=10, in_channels=1), Path("resnet20.pt"))  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import pickle
from pathlib import Path
from typing import Any

import torch
from torch import nn

from edge_tune.errors import UserError

__all__ = ["CHECKPOINT_KEYS", "check_fits", "read_state_dict", "weights_digest"]

CHECKPOINT_KEYS = ("state_dict", "model_state_dict", "model", "net")  # where checkpoints keep the weights
SHOWN = 5  # keys listed per kind of mismatch
MAX_INERT = 20  # classes a checkpoint may name beside its state dict (Distiller's: its ThinningRecipe)
HOW_TO_SAVE = 'save a plain state dict instead: torch.save(model.state_dict(), "weights.pt")'


def weights_digest(path: Path) -> str:
    """The file's content hash (sha256, 16 hex digits): the baseline cache's key for these weights."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, dict) and bool(obj) and all(isinstance(v, torch.Tensor) for v in obj.values())


def read_state_dict(path: Path, flag: str = "--weights") -> dict[str, torch.Tensor]:
    """The state dict in ``path`` (a state dict or a checkpoint holding one), ``module.`` prefixes stripped."""
    if not path.is_file():
        raise UserError(f"{flag} {path}: no such file")
    obj, inert = _load_inert(path, flag)
    if inert and not (isinstance(obj, dict) and any(_is_state_dict(obj.get(k)) for k in CHECKPOINT_KEYS)):
        raise UserError(
            f"{flag} {path}: the file holds objects that need code to be unpickled ({', '.join(inert[:3])}), "
            f"which edge_tune never runs; {HOW_TO_SAVE}"
        )
    state = obj if _is_state_dict(obj) else _inside_checkpoint(obj, path, flag)
    return {_strip(k): v for k, v in state.items()}


class _Inert:
    """Stands in for a class the file names and edge_tune never imports (a checkpoint's optimizer type,
    Distiller's ``ThinningRecipe``): it records its arguments and state and runs nothing."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args, self.kwargs = args, kwargs

    def __setstate__(self, state: Any) -> None:
        self.state = state


def _load_inert(path: Path, flag: str) -> tuple[Any, list[str]]:
    """``torch.load(weights_only=True)``; each global the file names beyond tensors and containers (up to
    ``MAX_INERT``) is unpickled as an inert ``_Inert`` instead of its class, so a checkpoint that also holds
    such objects (Distiller's) still gives up its state dict. Returns the object and those globals' names."""
    inert: list[str] = []
    while True:
        try:
            with torch.serialization.safe_globals([(_Inert, name) for name in inert]):
                return torch.load(path, map_location="cpu", weights_only=True), inert
        except pickle.UnpicklingError as exc:
            name = _unsupported_global(str(exc))
            if name is None or name in inert or len(inert) >= MAX_INERT:
                raise _unreadable(path, flag, exc) from None
            inert.append(name)
        except Exception as exc:  # torch raises many kinds on garbage: RuntimeError, IndexError, EOFError, ...
            raise _unreadable(path, flag, exc) from None


def _unsupported_global(message: str) -> str | None:
    if "Weights only load failed" not in message or "Unsupported global" not in message:
        return None
    return message.split("Unsupported global:", 1)[-1].split("was not")[0].replace("GLOBAL", "").strip() or None


def _inside_checkpoint(obj: Any, path: Path, flag: str) -> dict[str, torch.Tensor]:
    if isinstance(obj, dict):
        for key in CHECKPOINT_KEYS:
            if _is_state_dict(obj.get(key)):
                return dict(obj[key])
        found = ", ".join(sorted(map(str, obj))[:8]) or "nothing"
        raise UserError(
            f"{flag} {path}: a dict, but not a state dict (its values are not all tensors) and with no state "
            f"dict under {', '.join(CHECKPOINT_KEYS)}; its keys: {found}. {HOW_TO_SAVE[0].upper()}{HOW_TO_SAVE[1:]}"
        )
    raise UserError(f"{flag} {path}: holds a {type(obj).__name__}, not a state dict; {HOW_TO_SAVE}")


def _strip(key: str) -> str:
    return key[len("module.") :] if key.startswith("module.") else key


def _unreadable(path: Path, flag: str, exc: BaseException) -> UserError:
    return UserError(
        f"{flag} {path}: cannot be read as a PyTorch file, truncated or not saved by torch.save ({_first_line(exc)})"
    )


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0].split(". ")[0][:200]


def check_fits(state: dict[str, torch.Tensor], model: nn.Module, path: Path, model_name: str = "") -> None:
    """``state`` loads into ``model`` strictly; otherwise a ``UserError`` listing what does not fit."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [
        f"{k} {tuple(state[k].shape)} where the model has {tuple(own[k].shape)}"
        for k in own
        if k in state and tuple(state[k].shape) != tuple(own[k].shape)
    ]
    if not (missing or unexpected or shapes):
        return
    parts = [
        f"{len(items)} {what}: {'; '.join(items[:SHOWN])}{' ...' if len(items) > SHOWN else ''}"
        for what, items in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", shapes))
        if items
    ]
    raise UserError(
        f"--weights {path}: does not fit model {model_name or type(model).__name__} ({len(own)} tensors): "
        + "; ".join(parts)
        + ". Give the weights of this very architecture, with as many classes and input channels as the dataset"
    )
