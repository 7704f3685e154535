"""Trained weights the user brings (``--weights FILE``): read without running anyone's code, checked strictly.

Accepted: a plain ``state_dict`` (``torch.save(model.state_dict(), FILE)``), or a
checkpoint dict holding one under ``state_dict`` (Distiller, Lightning),
``model_state_dict``, ``model`` (torchvision's reference scripts) or ``net``.
A ``module.`` prefix (``nn.DataParallel``, Distiller) is stripped from every key.

The file is read with ``torch.load(weights_only=True)``: tensors, numbers,
strings and containers only; a file whose objects need code to be unpickled
(a whole pickled ``nn.Module``, an optimizer class) is refused with how to save
a plain state dict instead. The state dict must then fit the model exactly:
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
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "Weights only load failed" in str(exc) and "Unsupported global" in str(exc):
            what = str(exc).split("Unsupported global:", 1)[-1].split("was not")[0].replace("GLOBAL", "").strip()
            raise UserError(
                f"{flag} {path}: the file holds objects that need code to be unpickled ({what}), which "
                f"edge_tune never runs; {HOW_TO_SAVE}"
            ) from None
        raise _unreadable(path, flag, exc) from None
    except Exception as exc:  # torch raises many kinds on garbage: RuntimeError, IndexError, EOFError, ...
        raise _unreadable(path, flag, exc) from None
    state = obj if _is_state_dict(obj) else _inside_checkpoint(obj, path, flag)
    return {_strip(k): v for k, v in state.items()}


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
