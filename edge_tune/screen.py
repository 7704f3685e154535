"""Sieve's screen in the driver: a configuration's architecture, its speed-up on the device and its proxy.

A configuration is rendered to its schedule and the baseline pruned at once
to the schedule's final architecture (``CompressionScheduler.planned_model``,
what a trial measures while it fine-tunes). Its key is every convolution's
and linear layer's weight shape by name, whether it is quantized, and the
fine-tuning values the space searches: equal keys are the same network
trained the same way. The speed-up is the device's, without a per-layer
profile (``benchmark(profile=False)``, interleaved with the baseline and
cached by structure like every measurement); the proxy is top-1 after
re-estimating the batch norms on ``images`` training images
(``edge_tune.proxy``), scored on a fixed class-stratified sample of at most
``val_images`` validation images. A configuration whose architecture is the baseline's
is the baseline, and one whose key was screened before gets that key's
figures (Sieve keeps one candidate per key): neither is exported, measured
or scored again.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from edge_tune.baseline import Baseline
from edge_tune.compression import CompressionScheduler, parse_schedule
from edge_tune.data import Dataset
from edge_tune.device import LatencyResult
from edge_tune.errors import UserError
from edge_tune.progress import log
from edge_tune.proxy import proxy_top1, validation_sample
from edge_tune.search.sieve import Screened
from edge_tune.space import SearchSpace
from edge_tune.train import TrainConfig, make_optimizer

__all__ = ["DeviceScreen", "check_screenable"]

PROXY_IMAGES = 256  # training images the proxy re-estimates the batch norms on
PROXY_VAL_IMAGES = 2000  # validation images it is scored on, at most (the same ones for every candidate)


def check_screenable(space: SearchSpace) -> None:
    """Sieve screens architectures: the schedule must fix one in advance and prune structures."""
    schedule = parse_schedule(space.render(space.midpoint())[0])
    if not schedule.planned or not schedule.structured_final():
        why = "a regularizer decides it during training" if not schedule.planned else "it prunes no filters or channels"
        raise UserError(
            f"--searcher sieve: {space.path}: Sieve screens each candidate's architecture before training, and this "
            f"space's schedule does not fix one ({why}); use --searcher bayesopt for it"
        )


def architecture(model: nn.Module) -> list[list[Any]]:
    """Every convolution's and linear layer's weight shape, by name, in the model's order."""
    return [[n, list(m.weight.shape)] for n, m in model.named_modules() if isinstance(m, nn.Conv2d | nn.Linear)]


class DeviceScreen:
    """Screens configurations on the device and the data (``Screen`` for ``Sieve``).

    ``measure`` benchmarks what the device runs (ONNX or INT8 IR) without a profile: the experiment's
    calls its device actor; a benchmark may call a ``DeviceRunner`` in the same process."""

    def __init__(
        self,
        space: SearchSpace,
        baseline: Baseline,
        data: Dataset,
        measure: Callable[[bytes], LatencyResult],
        threshold: float,
        images: int = PROXY_IMAGES,
        val_images: int = PROXY_VAL_IMAGES,
    ) -> None:
        self.space, self._base, self.data, self.measure = space, baseline, data, measure
        self.threshold = threshold
        self.images = images
        self.val = validation_sample(data.val, val_images)
        self.example = torch.zeros(1, *data.input_shape)
        model = baseline.build(data.num_classes, data.in_channels).eval()
        self.baseline = Screened(json.dumps({"arch": architecture(model), "int8": False}), 1.0, self._proxy(model))
        self._seen: dict[str, Screened] = {self.baseline.key: self.baseline}  # by key: pruned the same way
        self.calls, self.seconds = 0, 0.0

    def _proxy(self, model: nn.Module) -> float:
        return proxy_top1(model, self.data, self.images, val=self.val)

    def __call__(self, config: dict[str, Any]) -> Screened:
        from edge_tune.trial import deployable

        started = time.perf_counter()
        doc, finetune = self.space.render(config)
        schedule = parse_schedule(doc)
        model = self._base.build(self.data.num_classes, self.data.in_channels)
        planned, _ = CompressionScheduler(
            model, schedule, self.example, lambda m: make_optimizer(m, TrainConfig())
        ).planned_model()
        planned.eval()
        arch, int8 = architecture(planned), schedule.quantizer is not None
        if json.dumps({"arch": arch, "int8": int8}) == self.baseline.key:
            return self.baseline
        searched = {k: finetune[k] for k in self.space.searched_finetune()}
        key = json.dumps({"arch": arch, "int8": int8} | ({"finetune": searched} if searched else {}))
        # Sieve keeps one candidate per key: a key seen before needs no export, measurement or proxy again.
        screened = self._seen.get(key)
        if screened is None:
            latency = self.measure(deployable(planned, self.example, schedule, self.data)[1])
            screened = self._seen[key] = Screened(key, latency.speedup, self._proxy(planned))
        self.calls += 1
        self.seconds += time.perf_counter() - started
        if self.calls % 16 == 0:
            log(f"sieve: {self.calls} candidates screened, {self.seconds / self.calls:.1f} s each")
        return screened
