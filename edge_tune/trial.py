"""One trial: prune a copy of the baseline, measure it on the device, fine-tune, report.

The device starts measuring the pruned architecture before fine-tuning
begins (latency depends only on the architecture), so the device and the
trainer work at the same time; the final weights are then evaluated on the
device as well. Every report carries ``score`` and ``constraint`` (NaN until
the latency is known) so Ray Tune's metric checks hold for every result.
"""

from __future__ import annotations

import itertools
import json
import math
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from edge_tune.baseline import Baseline
from edge_tune.compression import CompressionScheduler, Schedule, check_schedule_fits, parse_schedule
from edge_tune.compression.quantize import quantize_onnx
from edge_tune.confirm import SEED_STRIDE
from edge_tune.data import Dataset, load_dataset, with_channels
from edge_tune.device import LatencyResult, get_device
from edge_tune.device.engine import unpack_ir
from edge_tune.errored import earlier_error
from edge_tune.export import ExportMismatch, conv_shapes_torch, to_onnx, verify_export
from edge_tune.kinds import combine, gather, kind_fields, kind_slug
from edge_tune.layers import write_layers
from edge_tune.objective import Objective
from edge_tune.outcome import REPEAT, TrialOutcome
from edge_tune.space import SearchSpace
from edge_tune.train import Accuracy, TrainConfig, evaluate, fine_tune, make_optimizer

__all__ = ["DEVICE_GAP_POINTS", "TrialContext", "latency_fields", "run_trial"]

DEVICE_GAP_POINTS = 0.5  # a PyTorch vs device top-1 gap above this is flagged in results


@dataclass(frozen=True)
class TrialContext:
    """Everything a trial needs besides its config; shipped once through Ray's object store."""

    space: SearchSpace
    baseline: Baseline
    dataset: str
    data_dir: Path | None  # where the dataset's files are (None for digits)
    input_size: tuple[int, int] | None  # (H, W) pixels the data are resized to; None: the dataset's own
    in_channels: int  # what the model reads: grey images are repeated over 3 channels for a 3-channel model
    train: TrainConfig  # fine-tuning defaults
    train_overrides: dict[str, Any]  # from flags: over the space's finetune section, which is over the defaults
    objective: Objective
    baseline_macs: int
    threads: int  # torch threads in the trial (the CPUs Ray gave it)
    device_actor: str  # the EdgeDevice actor's name
    measure_after_finetune: bool = False  # the original, serial order; for benchmarks/overlap.py
    gpus: float = 0.0  # GPUs Ray gives each trial (--gpus-per-trial); fine-tuning runs on CUDA when > 0
    normalisation: tuple[tuple[float, ...] | None, tuple[float, ...] | None] = (None, None)  # --mean, --std
    truncate_lr: bool = False  # --truncate-lr: an lr scheduler's policy may outlast fine-tuning
    experiment_dir: Path | None = None  # where errored_trials.json is: a trial there is not run again
    target_kind: str = "CPU"  # --device: the kind device_actor measures
    also_devices: tuple[tuple[str, str], ...] = ()  # --also-device: (kind, actor name) of each other kind
    speedup_of: str = "target"  # the speed-up the objective uses (edge_tune.kinds)


def run_trial(config: dict[str, Any], ctx: TrialContext) -> None:
    """The Ray Tune trainable (function API)."""
    import ray
    from ray import tune

    before = earlier_error(ctx.experiment_dir, tune.get_context().get_trial_id()) if ctx.experiment_dir else None
    if before is not None:
        raise RuntimeError(f"errored in an earlier run of this experiment, and is not run again: {before}")
    torch.set_num_threads(ctx.threads)
    mean, std = ctx.normalisation
    # An image folder is read by as many processes as the trial has CPUs, beside the one that trains.
    data = load_dataset(ctx.dataset, ctx.data_dir, ctx.input_size, mean=mean, std=std, workers=ctx.threads)
    data = with_channels(data, ctx.in_channels)
    schedule_doc, finetune = ctx.space.render(config)
    schedule = parse_schedule(schedule_doc)
    model = ctx.baseline.build(data.num_classes, data.in_channels)
    example = torch.zeros(1, *data.input_shape)  # (1, C, H, W): the device runs batch 1
    cfg = replace(ctx.train, **{**finetune, **ctx.train_overrides})
    cfg = replace(cfg, seed=cfg.seed + SEED_STRIDE * int(config.get(REPEAT, 0)))  # a confirmation run's own seed
    check_schedule_fits(schedule, cfg.epochs, ctx.truncate_lr)
    compression = CompressionScheduler(
        model, schedule, example, lambda m: make_optimizer(m, cfg), lambda: activation_batches(data, cfg)
    )
    train_on = torch.device("cuda" if ctx.gpus and torch.cuda.is_available() else "cpu")
    devices = {ctx.target_kind: get_device(ctx.device_actor)}
    devices.update({kind: get_device(name) for kind, name in ctx.also_devices})
    # Latency depends only on the architecture, which a schedule of pruners
    # fixes in advance: measure the planned network while fine-tuning runs.
    latency_refs: dict[str, Any] = {}
    if not ctx.measure_after_finetune and schedule.planned:
        planned, _ = compression.planned_model()
        blob = deployable(planned, example, schedule, data)[1]
        latency_refs = {kind: device.benchmark.remote(blob) for kind, device in devices.items()}
        del planned, blob
    model.to(train_on)  # Ray's CUDA_VISIBLE_DEVICES makes "cuda" this trial's GPU
    if train_on.type == "cuda":  # channels-last convolutions are the fast layout for mixed precision
        model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]

    def epoch_end(epoch: int, loss: float, acc: Accuracy) -> None:
        compression.on_epoch_end(epoch)
        refs = list(latency_refs.values())
        ready = ray.wait(refs, num_returns=len(refs), timeout=0)[0] if refs else []
        speedup = math.nan
        if refs and len(ready) == len(refs):
            speedup = combine(gather(latency_refs), ctx.target_kind, ctx.speedup_of).speedup
        progress = TrialOutcome(
            epoch=epoch + 1,
            epochs=cfg.epochs,
            loss=loss,
            top1=acc.top1,
            top5=acc.top5,
            score=ctx.objective.score(acc.top1, speedup),
            constraint=ctx.objective.constraint(acc.top1),
        )
        tune.report(progress.to_dict(measured_only=True))

    fine_tune(
        model,
        data,
        cfg,
        on_epoch_start=compression.on_epoch_start,
        on_epoch_end=epoch_end,
        penalty=compression.regularizer_loss,
    )
    pruned = compression.finish()  # thins what the schedule left masked
    model.cpu()  # what the device runs is exported from the CPU copy
    acc = evaluate(model, data.val)
    final_onnx, final_blob = deployable(model, example, schedule, data)
    accuracy_refs = {kind: device.evaluate.remote(final_blob) for kind, device in devices.items()}
    if not latency_refs:
        latency_refs = {kind: device.benchmark.remote(final_blob) for kind, device in devices.items()}
    measured, device_top1 = gather(latency_refs), gather(accuracy_refs)
    for kind, result in measured.items():  # O0: every device runs the network we pruned
        where = f" on {kind}" if len(measured) > 1 else ""
        if result.ov_macs != pruned.macs_after:
            raise ExportMismatch(f"the runtime counts {result.ov_macs:,} MACs{where}, PyTorch {pruned.macs_after:,}")
        if list(result.ov_conv_shapes) != conv_shapes_torch(model):
            raise ExportMismatch(f"the runtime's convolutions{where} {result.ov_conv_shapes} are not PyTorch's")
    latency = combine(measured, ctx.target_kind, ctx.speedup_of)
    on_device = min(device_top1.values(), key=lambda a: a.top1)  # what ships must hold on every kind
    outcome = TrialOutcome(
        final=True,
        epoch=cfg.epochs,
        epochs=cfg.epochs,
        top1=acc.top1,
        top5=acc.top5,
        top1_device=on_device.top1,
        top5_device=on_device.top5,
        device_gap_flag=abs(acc.top1 - on_device.top1) > DEVICE_GAP_POINTS,
        **latency_fields(latency),
        macs=pruned.macs_after,
        params=pruned.params_after,
        macs_ratio=pruned.macs_after / ctx.baseline_macs,
        channels={g.members[0]: g.channels_after for g in pruned.groups},
        zeros=pruned.zeros,
        int8=schedule.quantizer is not None,
        kinds=kind_fields(measured, {k: a.top1 for k, a in device_top1.items()}) if len(measured) > 1 else {},
    )
    ctx.objective.judge(outcome)
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, "model.onnx").write_bytes(final_onnx)
        if final_blob is not final_onnx:  # the INT8 IR the device ran
            xml, weights = unpack_ir(final_blob) or (b"", b"")
            Path(tmp, "model_int8.xml").write_bytes(xml)
            Path(tmp, "model_int8.bin").write_bytes(weights)
        Path(tmp, "schedule.yaml").write_text(yaml.safe_dump(schedule.raw, sort_keys=False))
        Path(tmp, "finetune.json").write_text(json.dumps(asdict(cfg), indent=2))
        torch.save(model.state_dict(), Path(tmp, "state_dict.pt"))  # rebuilt by edge_tune.deliverable.load_pruned
        architecture = {
            "model": ctx.baseline.model_name,
            "dataset": ctx.dataset,
            "num_classes": data.num_classes,
            "in_channels": data.in_channels,
            "input_shape": list(data.input_shape),
            "channels": outcome.channels,
        }
        Path(tmp, "architecture.json").write_text(json.dumps(architecture, indent=2))
        write_layers(Path(tmp, "layers.csv"), latency.layers)
        write_layers(Path(tmp, "baseline_layers.csv"), latency.baseline_layers)  # profiled alongside
        for other, _ in ctx.also_devices:  # each other kind's, on its own device
            write_layers(Path(tmp, f"layers_{kind_slug(other)}.csv"), measured[other].layers)
            write_layers(Path(tmp, f"baseline_layers_{kind_slug(other)}.csv"), measured[other].baseline_layers)
        tune.report(outcome.to_dict(), checkpoint=tune.Checkpoint.from_directory(tmp))


ACTIVATION_BATCHES = 16  # training batches an activation-ranked pruner records feature maps on


def activation_batches(data: Dataset, cfg: TrainConfig) -> Iterator[torch.Tensor]:
    """The first ``ACTIVATION_BATCHES`` training batches in a fixed shuffled order, without augmentation."""
    batches = data.train.batches(cfg.batch_size, shuffle=torch.Generator().manual_seed(cfg.seed))
    return (x for x, _ in itertools.islice(batches, ACTIVATION_BATCHES))


def latency_fields(latency: LatencyResult) -> dict[str, Any]:
    """The device's measurement as ``TrialOutcome`` fields (units in the names)."""
    same = (
        "latency_ms_p90",
        "throughput_fps",
        "speedup",
        "speedup_ci_low",
        "speedup_ci_high",
        "speedup_cv",
        "rounds",
        "converged",
        "precision",
        "compile_s",
        "first_inference_ms",
        "ov_macs",
    )
    return {
        "latency_ms": latency.latency_ms_p50,
        "baseline_latency_ms": latency.baseline_latency_ms_p50,
        "latency_cached": latency.cached,
        **{f: getattr(latency, f) for f in same},
    }


def deployable(model: torch.nn.Module, example: torch.Tensor, schedule: Schedule, data: Dataset) -> tuple[bytes, bytes]:
    """(verified ONNX, what the device runs): the ONNX itself, or its INT8 IR when the schedule quantizes."""
    onnx_bytes = verify_and_export(model, example)
    if schedule.quantizer is None:
        return onnx_bytes, onnx_bytes
    # Calibration: a fixed sample of training images, never the validation split.
    order = np.random.default_rng(0).permutation(len(data.train))[: schedule.quantizer.calibration_images]
    return onnx_bytes, quantize_onnx(onnx_bytes, schedule.quantizer, data.train.images(np.sort(order).tolist()).numpy())


def verify_and_export(model: torch.nn.Module, example: torch.Tensor) -> bytes:
    """ONNX bytes whose convolutions provably match ``model`` (objective O0)."""
    onnx_bytes = to_onnx(model, example)
    verify_export(onnx_bytes, model)
    return onnx_bytes
