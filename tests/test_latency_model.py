"""The latency model's tables and predictions, on a synthetic device whose layer times are known exactly."""

import copy
import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from edge_tune.compression import PrunerSpec, apply_pruners
from edge_tune.device.profile import LayerTiming
from edge_tune.latency_model import LatencyModel, conv_shapes

OVERHEAD_MS = 0.05


def layer_times(model: nn.Module) -> tuple[LayerTiming, ...]:
    """A device where a convolution takes 1 ns per (filter x input channel), plus a classifier of 10 us."""
    rows = [
        LayerTiming(f"/{name}/Conv", name, "Convolution", "jit", 1e-6 * out * inp, ())
        for name, (out, inp) in conv_shapes(model).items()
    ]
    return (*rows, LayerTiming("logits", "logits", "FullyConnected", "gemm", 0.01, ()))


def total_ms(model: nn.Module) -> float:
    return sum(lt.time_ms for lt in layer_times(model)) + OVERHEAD_MS


def fake_device(baseline: nn.Module):
    base = layer_times(baseline)
    base_total = sum(lt.time_ms for lt in base)
    calls = []

    def benchmark(model: nn.Module):
        calls.append(model)
        return SimpleNamespace(
            layers=layer_times(model),
            baseline_layers=base,
            baseline_profiled_ms=base_total + OVERHEAD_MS,
            baseline_layers_share=base_total / (base_total + OVERHEAD_MS),
            speedup=(base_total + OVERHEAD_MS) / total_ms(model),  # what the device measures end to end
        )

    return benchmark, calls


def pruned(model, example, ratios):
    out = copy.deepcopy(model)
    specs = [PrunerSpec(n, "L1RankedStructureParameterPruner", "Filters", r, (n,)) for n, r in ratios.items()]
    apply_pruners(out, specs, example)
    return out


@pytest.fixture(scope="module")
def built():
    from edge_tune.models import create_model

    model = create_model("resnet20", num_classes=10, in_channels=1).eval()
    example = torch.zeros(1, 1, 32, 32)
    benchmark, calls = fake_device(model)
    return model, example, LatencyModel.build(model, example, benchmark, levels=16), calls


def test_tables_cover_each_inner_group_and_the_readers_of_its_filters(built):
    model, _, lm, calls = built
    assert len(calls) == 30 and lm.levels == 16  # levels 1..15 of 16 in each design; 16 is the baseline itself
    assert lm.context_beta == pytest.approx(0.0, abs=1e-9)  # this device has no context term
    assert set(lm.groups) == {f"layer{s}.{b}.conv1" for s in (1, 2, 3) for b in range(3)}
    assert lm.groups["layer2.1.conv1"].affected == ("layer2.1.conv1", "layer2.1.conv2")
    assert lm.groups["layer1.0.conv1"].channels == 16 and sorted(lm.groups["layer1.0.conv1"].points)[:3] == [1, 2, 3]
    assert lm.overhead_ms == pytest.approx(OVERHEAD_MS, abs=1e-4)  # fitted to the levels' speed-ups
    assert lm.baseline_ms == pytest.approx(total_ms(model)) and lm.predict(model) == pytest.approx(1.0)


def test_a_per_block_candidate_is_predicted_from_the_tables_without_measuring_it(built):
    model, example, lm, calls = built
    n = len(calls)
    ratios = {"layer1.0.conv1": 0.25, "layer2.2.conv1": 0.7, "layer3.1.conv1": 0.33, "layer3.2.conv1": 0.9}
    cand = pruned(model, example, ratios)
    assert conv_shapes(cand)["layer3.1.conv1"][0] not in lm.groups["layer3.1.conv1"].points  # interpolated
    truth = total_ms(model) / total_ms(cand)
    assert lm.predict(cand) == pytest.approx(truth, rel=1e-3) and truth > 1.1  # time is linear in the width here
    assert len(calls) == n  # no device call


def test_shapes_no_inner_group_explains_are_not_covered(built):
    model, example, lm, _ = built
    residual = ("layer2.0.conv2", "layer2.0.downsample.0", "layer2.1.conv2", "layer2.2.conv2")
    cand = copy.deepcopy(model)
    apply_pruners(cand, [PrunerSpec("r", "L1RankedStructureParameterPruner", "Filters", 0.5, residual)], example)
    assert not lm.covers(cand) and lm.predict(cand) is None


def test_a_staircase_is_kept_where_it_was_measured():
    from edge_tune.latency_model import GroupTable

    t = GroupTable(("c",), ("c",), 32, 1.0, {8: [0.5, 0.52, 0.48], 16: [0.5], 24: [0.9]})
    assert t.ratio(8) == 0.5 and t.ratio(16) == 0.5 and t.ratio(32) == 1.0 and t.ratio(40) == 1.0
    assert t.ratio(20) == pytest.approx(0.7) and t.ratio(4) == 0.5 and t.ratio(28) == pytest.approx(0.95)


def test_the_constant_beside_the_layers_is_fitted_to_end_to_end_speed_ups():
    from edge_tune.latency_model import fit_overhead

    overhead = 0.2  # the profiles' layers (B, C) are right, the end-to-end speed-ups include 0.2 ms more
    levels = [(1.0, c, (1.0 + overhead) / (c + overhead)) for c in (0.3, 0.5, 0.7, 0.9)]
    assert fit_overhead(levels) == pytest.approx(overhead, abs=1e-3)
    assert fit_overhead([]) == 0.0


def test_the_context_term_is_fitted_where_both_designs_measured_a_width_and_predicts_both_kinds_of_candidate():
    """A device on which each block's convolutions run faster the more of the blocks' filters the whole
    model has lost: exp(beta * (context - 1)), beta known; nothing else about it changes."""
    from edge_tune.latency_model import context_of
    from edge_tune.models import create_model

    beta = 0.3
    model = create_model("resnet20", num_classes=10, in_channels=1).eval()
    example = torch.zeros(1, 1, 32, 32)
    full = conv_shapes(model)
    blocks = [f"layer{s}.{b}" for s in (1, 2, 3) for b in range(3)]

    def ms(shapes, name):
        return 1e-6 * shapes[name][0] * shapes[name][1]

    def times(m):
        shapes = conv_shapes(m)
        ctx = context_of(
            {b: (shapes[f"{b}.conv1"][0], full[f"{b}.conv1"][0], ms(full, f"{b}.conv1") + ms(full, f"{b}.conv2"))
             for b in blocks}
        )  # fmt: skip
        scale = {n: math.exp(beta * (ctx - 1)) for b in blocks for n in (f"{b}.conv1", f"{b}.conv2")}
        rows = [
            LayerTiming(f"/{n}/Conv", n, "Convolution", "jit", ms(shapes, n) * scale.get(n, 1.0), ()) for n in shapes
        ]
        return (*rows, LayerTiming("logits", "logits", "FullyConnected", "gemm", 0.01, ()))

    def total(m):
        return sum(lt.time_ms for lt in times(m)) + OVERHEAD_MS

    base = times(model)

    def benchmark(m):
        return SimpleNamespace(
            layers=times(m),
            baseline_layers=base,
            baseline_profiled_ms=total(model),
            baseline_layers_share=(total(model) - OVERHEAD_MS) / total(model),
            speedup=total(model) / total(m),
        )

    lm = LatencyModel.build(model, example, benchmark, levels=16)
    assert lm.context_beta == pytest.approx(beta, rel=1e-6)
    per_stage = pruned(model, example, {f"{b}.conv1": 0.75 for b in blocks})
    per_block = pruned(model, example, {"layer1.0.conv1": 0.25, "layer2.2.conv1": 0.75, "layer3.1.conv1": 0.5})
    tiny = pruned(model, example, {f"{b}.conv1": 0.9 for b in blocks})  # context 0.1: the uniform design's end
    for cand in (per_stage, per_block, tiny):
        assert lm.predict(cand) == pytest.approx(total(model) / total(cand), rel=1e-3)
    # The same measurements without the term: each width's median mixes the two designs' contexts
    assert lm.predict(tiny, context=False) != pytest.approx(total(model) / total(tiny), rel=1e-3)
    one = LatencyModel.build(model, example, benchmark, levels=16, designs=("shuffled",))
    assert one.context_beta == 0.0 and len(one.designs) == 1
    with pytest.raises(ValueError, match="designs"):
        LatencyModel.build(model, example, benchmark, levels=16, designs=("diagonal",))
