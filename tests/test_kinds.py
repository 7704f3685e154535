"""Several device kinds in one search (edge_tune.kinds): names, resources, and one speed-up from several.

The end-to-end run with a second kind (OpenVINO CPU and ONNX Runtime CPU, real actors) is the smoke run of
tests/test_run.py.
"""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
from conftest import REPO

from edge_tune.device import DeviceConfig
from edge_tune.device.runner import LatencyResult
from edge_tune.errors import UserError
from edge_tune.kinds import check_kinds, combine, kind_columns, kind_config, kind_fields, kind_slug, resource_for


def _result(speedup: float, low: float, high: float, cv: float = 0.02, p50: float = 1.0) -> LatencyResult:
    return LatencyResult(
        latency_ms_p50=p50, latency_ms_p90=p50 * 1.1, throughput_fps=1000 / p50, baseline_latency_ms_p50=p50 * speedup,
        speedup=speedup, speedup_ci_low=low, speedup_ci_high=high, speedup_cv=cv, latency_cv=cv, rounds=20,
        converged=True, device="CPU", precision="f32", threads=1, compile_s=0.1, first_inference_ms=2.0, ov_macs=10,
        ov_conv_shapes=((16, 3, 3, 3),),
    )  # fmt: skip


def test_names_resources_and_actors_follow_the_kind():
    assert (
        kind_slug("ort:CPU") == "ort_cpu"
        and kind_slug("GPU.1") == "gpu_1"
        and kind_slug("AUTO:GPU,CPU") == ("auto_gpu_cpu")
    )
    other = kind_config(DeviceConfig(device="CPU", count=2, threads=2), "ort:CPU")
    assert (other.resource, other.actor_name, other.count, other.threads) == (
        "edge_device_ort_cpu", "edge_device_ort_cpu", 1, 2,
    )  # fmt: skip
    # The target asks for its kind's own resource where the cluster has enough of it, else the plain one.
    target = DeviceConfig(device="CPU", count=2)
    assert resource_for(target, {"edge_device": 2}).resource == "edge_device"
    assert resource_for(target, {"edge_device_cpu": 2, "edge_device": 1}).resource == "edge_device_cpu"
    assert resource_for(target, {"edge_device_cpu": 1, "edge_device": 2}).resource == "edge_device"


def test_each_kind_once_and_a_combined_speedup_needs_two():
    check_kinds("CPU", ["ort:CPU", "GPU"], "geomean")
    with pytest.raises(UserError, match="--also-device cpu: --device CPU is already measured"):
        check_kinds("CPU", ["cpu"], "target")
    with pytest.raises(UserError, match="--also-device ort_cpu: --also-device ort:CPU"):
        check_kinds("CPU", ["ort:CPU", "ort_cpu"], "target")
    with pytest.raises(UserError, match="--speedup-of worst: only --device CPU"):
        check_kinds("CPU", [], "worst")


def test_combine_worst_and_geomean():
    cpu, ort = _result(1.6, 1.5, 1.7, cv=0.03, p50=0.5), _result(1.2, 1.1, 1.3, cv=0.04, p50=0.7)
    both = {"CPU": cpu, "ort:CPU": ort}
    assert combine(both, "CPU", "target") is cpu and combine({"CPU": cpu}, "CPU", "worst") is cpu
    worst = combine(both, "CPU", "worst")
    # The worst kind's speed-up, interval and spread; the target's own p50s.
    assert (worst.speedup, worst.speedup_ci_low, worst.speedup_ci_high, worst.speedup_cv) == (1.2, 1.1, 1.3, 0.04)
    assert worst.latency_ms_p50 == 0.5 and worst.baseline_latency_ms_p50 == cpu.baseline_latency_ms_p50
    geo = combine(both, "CPU", "geomean")
    assert geo.speedup == pytest.approx(math.sqrt(1.6 * 1.2))
    assert geo.speedup_ci_low == pytest.approx(math.sqrt(1.5 * 1.1)) and geo.speedup_cv == pytest.approx(0.025)
    assert geo.speedup_ci_low < geo.speedup < geo.speedup_ci_high
    # Not converged or not cached anywhere: not so for the combination either.
    assert not combine({"CPU": cpu, "ort:CPU": replace(ort, converged=False)}, "CPU", "worst").converged
    # A kind that measured nothing leaves the combination unmeasured, not the other kind's alone.
    unmeasured = {"CPU": cpu, "ort:CPU": replace(ort, speedup=math.nan)}
    assert math.isnan(combine(unmeasured, "CPU", "geomean").speedup)
    assert math.isnan(combine(unmeasured, "CPU", "worst").speedup)


def test_geomean_interval_covers_when_each_kind_covers():
    """Monte Carlo over random intervals that cover their kind's true speed-up: the geometric mean's interval
    (geometric means of the bounds) covers the true geometric mean every time."""
    import random

    rng = random.Random(0)
    for _ in range(500):
        true = {k: math.exp(rng.uniform(-0.5, 0.8)) for k in ("a", "b", "c")}
        results = {
            k: _result(v * math.exp(rng.gauss(0, 0.02)), v * math.exp(-rng.uniform(0, 0.1)),
                       v * math.exp(rng.uniform(0, 0.1)))
            for k, v in true.items()
        }  # fmt: skip
        geo = combine(results, "a", "geomean")
        truth = math.exp(sum(math.log(v) for v in true.values()) / 3)
        assert geo.speedup_ci_low <= truth <= geo.speedup_ci_high


def test_each_kinds_numbers_become_columns():
    kinds = kind_fields({"CPU": _result(1.6, 1.5, 1.7), "ort:CPU": _result(1.2, 1.1, 1.3)}, {"CPU": 97.0})
    columns = kind_columns(kinds)
    assert columns["speedup_cpu"] == 1.6 and columns["speedup_ort_cpu"] == 1.2
    assert columns["top1_device_cpu"] == 97.0 and math.isnan(columns["top1_device_ort_cpu"])
    assert {"latency_ms_ort_cpu", "baseline_latency_ms_ort_cpu", "speedup_ci_low_cpu"} <= set(columns)


def test_the_space_files_devices_list_unless_the_flags_name_one(tmp_path):
    from edge_tune.run import build_parser, config_from_args

    text = (REPO / "search_spaces" / "filter_prune.yaml").read_text()
    space = tmp_path / "two_kinds.yaml"
    space.write_text(text.replace("dataset: digits\n", "dataset: digits\ndevices: [ort:CPU, CPU]\n", 1))

    def kinds(*flags: str) -> tuple[str, list[str], str]:
        cfg = config_from_args(build_parser().parse_args(["--space", str(space), *flags]))
        return cfg.device.device, [d.device for d in cfg.also_devices], cfg.speedup_of

    assert kinds() == ("ort:CPU", ["CPU"], "target")
    assert kinds("--speedup-of", "geomean") == ("ort:CPU", ["CPU"], "geomean")
    assert kinds("--device", "CPU") == ("CPU", [], "target")  # a flag replaces the whole list
    assert kinds("--also-device", "ort:CPU") == ("CPU", ["ort:CPU"], "target")
    with pytest.raises(UserError, match="--speedup-of worst"):
        kinds("--device", "CPU", "--speedup-of", "worst")


def test_kinds_come_back_from_results_json_as_numbers():
    import json

    from edge_tune.outcome import TrialOutcome, json_safe

    kinds = kind_fields({"CPU": _result(1.6, 1.5, 1.7), "ort:CPU": _result(1.2, 1.1, 1.3)}, {"CPU": 97.0})
    o = TrialOutcome(final=True, speedup=1.2, kinds=kinds)
    back = TrialOutcome.from_dict(json.loads(json.dumps(json_safe(o.to_dict()))))
    assert back.kinds["CPU"] == kinds["CPU"] and back.kinds["ort:CPU"]["speedup"] == 1.2
    assert math.isnan(back.kinds["ort:CPU"]["top1_device"])  # null in the file, NaN again
