import math

import pytest

from edge_tune.compression import PrunerSpec, apply_pruners
from edge_tune.device import DeviceConfig, DeviceRunner
from edge_tune.errors import UserError
from edge_tune.export import to_onnx
from edge_tune.train import evaluate

FAST = DeviceConfig(device="CPU", threads=1, warmup=3, rounds=5, iters_per_round=5)


@pytest.fixture
def runner(resnet20, example, digits):
    x, y = digits.x_val[:64].numpy(), digits.y_val[:64].numpy()
    return DeviceRunner(FAST, to_onnx(resnet20, example), (x, y))


def test_baseline_against_itself_is_about_one(runner, resnet20, example):
    result = runner.benchmark(to_onnx(resnet20, example))
    assert result.precision == "f32" and result.threads == 1 and result.rounds == 5
    assert result.latency_ms_p50 > 0 and result.latency_ms_p90 >= result.latency_ms_p50
    assert 0.5 < result.speedup < 2.0 and math.isfinite(result.speedup_cv)


def test_identical_architectures_are_measured_once(runner, resnet20, example):
    spec = PrunerSpec("p", "L1RankedStructureParameterPruner", "Filters", 0.5, ("layer3.0.conv1.weight",))
    apply_pruners(resnet20, [spec], example)
    first = runner.benchmark(to_onnx(resnet20, example))
    resnet20.layer3[0].conv1.weight.data.mul_(2)  # new weights, same structure
    second = runner.benchmark(to_onnx(resnet20, example))
    assert not first.cached and second.cached and runner.stats["cache_hits"] == 1
    assert second.speedup == first.speedup


def test_device_accuracy_matches_pytorch(runner, resnet20, example, digits):
    on_device = runner.evaluate(to_onnx(resnet20, example))
    in_torch = evaluate(resnet20, digits.x_val[:64], digits.y_val[:64])
    assert on_device.images == 64
    assert abs(on_device.top1 - in_torch.top1) <= 100 / 64 + 1e-9  # at most one image apart


def test_missing_device_lists_available(resnet20, example):
    with pytest.raises(UserError) as err:
        DeviceRunner(DeviceConfig(device="MYRIAD"))
    assert "MYRIAD" in str(err.value) and "CPU" in str(err.value)


def test_benchmark_needs_a_baseline(resnet20, example):
    with pytest.raises(RuntimeError, match="set_baseline"):
        DeviceRunner(FAST).benchmark(to_onnx(resnet20, example))
