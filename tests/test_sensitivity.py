"""Sensitivity analysis: the groups it finds, its selection rule, and the real CLI end to end."""

import csv
import subprocess
import sys

import pytest
import torch
from conftest import REPO

from edge_tune.models import create_model
from edge_tune.sensitivity import GroupPoint, prunable_groups, select_groups, space_for
from edge_tune.space import load_space


def test_every_convolution_is_in_exactly_one_filter_group(resnet20, example):
    groups = prunable_groups(resnet20, example)
    convs = [n for n, m in resnet20.named_modules() if isinstance(m, torch.nn.Conv2d)]
    assert sorted(n for g in groups for n in g) == sorted(convs)
    stage3 = next(g for g in groups if "layer3.0.conv2" in g)
    assert set(stage3) == {"layer3.0.conv2", "layer3.0.downsample.0", "layer3.1.conv2", "layer3.2.conv2"}
    assert len(groups) == 12  # nine block-inner conv1 groups and one residual group per stage


def test_depthwise_convolutions_follow_their_producer():
    model = create_model("mobilenetv2", num_classes=10, in_channels=1)
    groups = prunable_groups(model, torch.zeros(1, 1, 32, 32))
    assert not any("depthwise" in g[0] for g in groups)  # never a group of its own
    expand3 = next(g for g in groups if "features.3.expand" in g)
    assert "features.3.depthwise" in expand3  # its channels go with the expansion that feeds it


def _point(group, ratio, top1_drop, speedup):
    return GroupPoint(group, (group,), ratio, 8, 90 - top1_drop, top1_drop, 1000, speedup, speedup, speedup)


def test_selection_prefers_latency_per_accuracy_point_and_caps_ratios():
    points = [
        _point("cheap", 0.5, 0.2, 1.10), _point("cheap", 0.9, 3.0, 1.30),
        _point("costly", 0.5, 8.0, 1.20), _point("costly", 0.9, 40.0, 1.50),
        _point("useless", 0.5, 0.0, 1.00), _point("useless", 0.9, 0.1, 0.99),
    ]  # fmt: skip
    chosen = select_groups(points, top=3, max_drop=10.0)
    assert [(g, cap) for g, _, cap in chosen] == [("cheap", 0.9), ("costly", 0.5)]  # no gain: never chosen


def test_written_space_loads(tmp_path):
    space = space_for("resnet20", "digits", [("layer3.0.conv1", ("layer3.0.conv1",), 0.8)])
    import yaml

    (tmp_path / "s.yaml").write_text(yaml.safe_dump(space, sort_keys=False))
    loaded = load_space(tmp_path / "s.yaml")
    assert list(loaded.params) == ["g0_layer3_0_conv1"] and loaded.params["g0_layer3_0_conv1"].high == 0.8


def test_the_cli_measures_every_group_on_the_device_and_writes_a_space(tmp_path, cache_dir):
    out, space = tmp_path / "out", tmp_path / "reduced.yaml"
    proc = subprocess.run(
        [sys.executable, "-m", "edge_tune.sensitivity", "--ratios", "0.9", "--baseline-epochs", "4",
         "--cache-dir", str(cache_dir), "--out", str(out), "--write-space", str(space),
         "--top", "2", "--max-drop", "100"],
        cwd=REPO, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = list(csv.DictReader(open(out / "sensitivity.csv")))
    assert len(rows) == 12 and all(float(r["speedup"]) > 0 for r in rows)
    stage3 = [r for r in rows if r["group"] == "layer3.0.conv2" and r["ratio"] == "0.9"]
    assert float(stage3[0]["speedup"]) > 1.0 and int(stage3[0]["channels"]) == 7  # 64 filters, 90 % gone
    assert (out / "sensitivity.png").stat().st_size > 10_000
    assert 1 <= len(load_space(space).params) <= 2


def test_bad_ratios_exit_2():
    proc = subprocess.run(
        [sys.executable, "-m", "edge_tune.sensitivity", "--ratios", "0.5,1.5"], cwd=REPO, capture_output=True, text=True
    )
    assert proc.returncode == 2 and "--ratios" in proc.stderr


@pytest.fixture
def example():
    return torch.zeros(1, 1, 32, 32)
