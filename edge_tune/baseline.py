"""The baseline every candidate is pruned from: the user's trained weights, or one trained here, and its cache.

``--weights FILE``: the user's trained network. It is not trained: it is
checked to fit the model (``weights.check_fits``) and evaluated on the
validation split; the evaluation is cached by the weights' content hash and
the data's fingerprint. Without weights (the embedded ``digits`` try-out),
the baseline is trained once with ``TrainConfig`` and cached by model,
dataset, data fingerprint and the whole recipe. Either way the run says where
the baseline's numbers came from (``Baseline.source``). Runs sharing a cache
train a baseline once: the first holds a lock on the entry while it trains,
the others wait and load it. Files are written whole (written beside, then
renamed); an entry that cannot be read is named, moved aside and made again.
"""

from __future__ import annotations

import contextlib
import copy
import fcntl
import hashlib
import json
import math
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from edge_tune.data import Dataset
from edge_tune.files import write_atomically
from edge_tune.models import create_model
from edge_tune.train import Accuracy, TrainConfig, evaluate, fine_tune

__all__ = ["Baseline", "baseline_key", "describe", "load_baseline", "load_or_train_baseline", "load_weights_baseline"]


@dataclass(frozen=True)
class Baseline:
    model_name: str
    dataset: str
    state_dict: dict[str, torch.Tensor]
    accuracy: Accuracy
    train_seconds: float  # wall time of the training that produced it, also when loaded from cache
    cache_key: str
    cached: bool  # True when loaded from the cache in this run
    source: str = "trained"  # "trained" here, or "weights FILE (sha256 DIGEST)"

    def build(self, num_classes: int, in_channels: int) -> nn.Module:
        model = create_model(self.model_name, num_classes=num_classes, in_channels=in_channels)
        model.load_state_dict(copy.deepcopy(self.state_dict))
        return model.eval()


def _fingerprint(data: Dataset) -> str:
    """The data's identity: every label, and every 97th image (CIFAR from two folders may differ) or, for data
    read from files, every file's name, size and modification time, with the input size and normalisation."""
    h = hashlib.sha256(data.y_train.numpy().tobytes())
    h.update(data.y_val.numpy().tobytes())
    if data.in_memory:
        h.update(data.x_train[::97].numpy().tobytes())
        h.update(str(tuple(data.x_train.shape)).encode())
    else:
        for split in (data.train, data.val):
            for name in split.files:  # type: ignore[attr-defined]
                st = os.stat(name)
                h.update(f"{name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        h.update(str((data.input_shape, data.mean, data.std)).encode())
    return h.hexdigest()[:16]


def baseline_key(model_name: str, data: Dataset, cfg: TrainConfig) -> str:
    """Cache key: model, dataset and the whole training recipe (seed included)."""
    blob = json.dumps(
        {"model": model_name, "dataset": data.name, "data": _fingerprint(data), **asdict(cfg)}, sort_keys=True
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


@contextlib.contextmanager
def _locked(path: Path, log: Callable[[str], None]) -> Iterator[None]:
    """An exclusive lock on ``path`` (created if missing), held for the block: two runs sharing a cache make
    one cache entry between them; the second waits, then finds it made."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log(f"waiting for another run that is making the same baseline (lock {path})")
            fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _aside(folder: Path, exc: BaseException, log: Callable[[str], None]) -> None:
    """Move a damaged cache entry out of the way, keeping it for a look; it is made again."""
    aside = folder.with_name(f"{folder.name}.damaged-{time.strftime('%Y%m%d-%H%M%S')}")
    os.replace(folder, aside)
    why = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
    log(f"the cached baseline {folder} is damaged ({type(exc).__name__}: {why}); moved to {aside}, making it again")


def load_or_train_baseline(
    model_name: str, data: Dataset, cfg: TrainConfig, cache_dir: Path, log: Callable[[str], None] = print
) -> Baseline:
    """Load the baseline from ``cache_dir`` or train it there on first use (under a lock, so that runs sharing
    the cache train it once); a damaged entry is moved aside and trained again."""
    key = baseline_key(model_name, data, cfg)
    folder = cache_dir / "baselines" / f"{model_name.replace(':', '_')}-{data.name}-{key}"
    with _locked(folder.with_name(f"{folder.name}.lock"), log):
        weights, meta_file = folder / "model.pt", folder / "meta.json"
        if folder.exists():
            try:
                meta = json.loads(meta_file.read_text())
                state = torch.load(weights, map_location="cpu", weights_only=True)
                acc = Accuracy(**meta["accuracy"])
                return Baseline(model_name, data.name, state, acc, meta["train_seconds"], key, cached=True)
            except Exception as exc:  # truncated, unreadable, half-written by an older version: made again
                _aside(folder, exc, log)
        return _train(model_name, data, cfg, folder, key, log)


def _train(
    model_name: str, data: Dataset, cfg: TrainConfig, folder: Path, key: str, log: Callable[[str], None]
) -> Baseline:
    weights, meta_file = folder / "model.pt", folder / "meta.json"
    log(f"training baseline {model_name} on {data.name} ({cfg.epochs} epochs); cached in {folder}")
    torch.manual_seed(cfg.seed)
    model = create_model(model_name, num_classes=data.num_classes, in_channels=data.in_channels)
    start = time.perf_counter()

    def cosine(epoch: int, opt: torch.optim.Optimizer) -> None:
        for group in opt.param_groups:
            group["lr"] = 0.5 * cfg.lr * (1 + math.cos(math.pi * epoch / cfg.epochs))

    def progress(epoch: int, loss: float, acc: Accuracy) -> None:
        done, elapsed = epoch + 1, time.perf_counter() - start
        bar = "#" * round(20 * done / cfg.epochs)
        log(
            f"  baseline [{bar:20}] epoch {done}/{cfg.epochs}: loss {loss:.3f}, top1 {acc.top1:.2f}%, "
            f"{elapsed:.0f}s, about {elapsed / done * (cfg.epochs - done):.0f}s left"
        )

    acc = fine_tune(model, data, cfg, on_epoch_start=cosine, on_epoch_end=progress)
    seconds = time.perf_counter() - start
    folder.mkdir(parents=True, exist_ok=True)
    meta = {"accuracy": asdict(acc), "train_seconds": seconds, "model": model_name, "dataset": data.name}
    write_atomically(weights, lambda tmp: torch.save(model.state_dict(), tmp))
    write_atomically(meta_file, lambda tmp: tmp.write_text(json.dumps(meta | {"recipe": asdict(cfg)}, indent=2)))
    return Baseline(model_name, data.name, model.state_dict(), acc, seconds, key, cached=False)


def load_weights_baseline(
    model_name: str, data: Dataset, path: Path, cache_dir: Path, log: Callable[[str], None] = print
) -> Baseline:
    """The user's trained weights as the baseline: checked to fit, evaluated (cached by content), never trained."""
    from edge_tune.weights import check_fits, read_state_dict, weights_digest

    state = read_state_dict(path)
    model = create_model(model_name, num_classes=data.num_classes, in_channels=data.in_channels)
    check_fits(state, model, path, model_name)
    digest = weights_digest(path)
    key = hashlib.sha256(f"{model_name}|{data.name}|{_fingerprint(data)}|{digest}".encode()).hexdigest()[:16]
    meta_file = cache_dir / "evaluations" / f"{model_name.replace(':', '_')}-{data.name}-{key}.json"
    source = f"weights {path} (sha256 {digest})"
    if meta_file.exists():
        try:
            acc = Accuracy(**json.loads(meta_file.read_text())["accuracy"])
            return Baseline(model_name, data.name, state, acc, 0.0, key, cached=True, source=source)
        except (ValueError, KeyError, TypeError) as exc:  # damaged: evaluated again (it is cheap)
            log(f"the cached evaluation {meta_file} is damaged ({type(exc).__name__}); evaluating again")
    log(f"evaluating the weights in {path} on {data.name}'s validation split ({len(data.val)} images)")
    model.load_state_dict(state)
    acc = evaluate(model, data.val)
    meta_file.parent.mkdir(parents=True, exist_ok=True)
    meta = {"accuracy": asdict(acc), "weights": str(path), "sha256": digest}
    write_atomically(meta_file, lambda tmp: tmp.write_text(json.dumps(meta, indent=2)))
    return Baseline(model_name, data.name, state, acc, 0.0, key, cached=False, source=source)


def load_baseline(
    model_name: str,
    data: Dataset,
    weights: Path | None,
    cfg: TrainConfig,
    cache_dir: Path,
    log: Callable[[str], None] = print,
) -> Baseline:
    """The user's weights when given (evaluated, not trained), else the baseline trained here (cached)."""
    if weights is not None:
        return load_weights_baseline(model_name, data, weights, cache_dir, log)
    return load_or_train_baseline(model_name, data, cfg, cache_dir, log)


def describe(baseline: Baseline) -> str:
    """Where the baseline's numbers came from, for the run's log."""
    if baseline.source != "trained":
        return f"from {baseline.source}, evaluated{' (cached)' if baseline.cached else ''}, not trained"
    return "cached" if baseline.cached else f"trained in {baseline.train_seconds:.0f}s"
