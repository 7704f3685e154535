"""Every shipped search space, run for real on a small budget: its schedule through fine-tuning,
the ONNX export, and OpenVINO's view of the result."""

import random

import pytest
import torch

from edge_tune.compression import CompressionScheduler, count_macs_params, parse_schedule
from edge_tune.compression.quantize import quantize_onnx
from edge_tune.data import Dataset
from edge_tune.device import DeviceConfig, DeviceRunner, TimingPlan
from edge_tune.export import conv_shapes_torch, structure_hash, to_onnx, verify_export
from edge_tune.models import create_model
from edge_tune.space import find_space, space_names
from edge_tune.train import TrainConfig, fine_tune, make_optimizer

FAST = DeviceConfig(
    timing=TimingPlan(warmup=2, iters_per_round=3, min_rounds=3, max_rounds=3), profile_repeats=1, profile_inferences=2
)


@pytest.fixture(scope="module")
def small(digits):
    """128 training and 64 validation images: two steps an epoch."""
    return Dataset.from_tensors(
        "digits", digits.x_train[:128], digits.y_train[:128], digits.x_val[:64], digits.y_val[:64], digits.num_classes
    )


def test_the_spaces_the_research_asks_about_ship():
    assert {"filter_prune", "channel_prune", "fine_grained_agp", "filter_prune_int8", "hybrid"} <= set(space_names())


@pytest.mark.parametrize("name", space_names())
def test_space_runs_its_schedule_for_real(name, small):
    space = find_space(name)
    rng = random.Random(name)
    config = {  # a random point of the space, not only its middle
        p.name: rng.uniform(p.low, p.high) if p.type == "float" else rng.choice(p.values or (int(p.low),))
        for p in space.params.values()
    }
    schedule_doc, finetune = space.render(config)
    schedule = parse_schedule(schedule_doc)
    torch.manual_seed(0)
    model = create_model(space.model, num_classes=10, in_channels=1)
    example = torch.zeros(1, 1, 32, 32)
    baseline_onnx = to_onnx(model.eval(), example)
    cfg = TrainConfig(**{**finetune, "batch_size": 64})
    scheduler = CompressionScheduler(model, schedule, example, lambda m: make_optimizer(m, cfg))
    planned, _ = scheduler.planned_model()
    fine_tune(
        model, small, cfg, on_epoch_start=scheduler.on_epoch_start, on_epoch_end=lambda e, *_: scheduler.on_epoch_end(e)
    )
    report = scheduler.finish()
    onnx_bytes = to_onnx(model, example)
    verify_export(onnx_bytes, model)
    assert structure_hash(onnx_bytes) == structure_hash(to_onnx(planned, example))  # measured in advance = final
    runner = DeviceRunner(FAST, baseline_onnx, (small.x_val.numpy(), small.y_val.numpy()))
    blob = quantize_onnx(onnx_bytes, schedule.quantizer, small.x_train.numpy()) if schedule.quantizer else onnx_bytes
    latency = runner.benchmark(blob)
    assert latency.ov_macs == count_macs_params(model, example)[0] == report.macs_after
    assert list(latency.ov_conv_shapes) == conv_shapes_torch(model)
    if schedule.quantizer:  # O0: the device really runs INT8 kernels
        convs = [lt for lt in latency.layers if lt.node_type == "Convolution"]
        assert convs and all("i8" in lt.exec_type.lower() for lt in convs), [lt.exec_type for lt in convs]
        assert abs(runner.evaluate(blob).top1 - runner.evaluate(onnx_bytes).top1) <= 100 * 4 / 64  # a few images
    if any(s.group_type in ("Filters", "Channels") for s in schedule.pruners.values()):
        assert report.macs_after <= report.macs_before
    if any(s.group_type in ("Elements", "Rows") and s.sparsity >= 0.1 for s in schedule.pruners.values()):
        assert report.zeros > 0  # fine-grained and row pruning leave zeros, not smaller shapes
        assert sum(int((p == 0).sum()) for p in model.parameters()) >= report.zeros
