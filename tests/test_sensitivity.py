"""Sensitivity analysis: the groups it finds, its selection rule, and the real CLI end to end."""

import csv
import subprocess
import sys

import pytest
import torch
import yaml
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

    (tmp_path / "s.yaml").write_text(yaml.safe_dump(space, sort_keys=False))
    loaded = load_space(tmp_path / "s.yaml")
    assert list(loaded.params) == ["g0_layer3_0_conv1"] and loaded.params["g0_layer3_0_conv1"].high == 0.8


def test_the_cli_measures_every_inner_group_on_the_device_and_writes_a_per_block_space(tmp_path, cache_dir):
    out, space = tmp_path / "out", tmp_path / "blocks.yaml"
    proc = subprocess.run(
        [sys.executable, "-m", "edge_tune.sensitivity", "--ratios", "0.9", "--baseline-epochs", "4",
         "--cache-dir", str(cache_dir), "--out", str(out), "--write-space", str(space), "--blocks",
         "--max-drop", "100"],
        cwd=REPO, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = list(csv.DictReader(open(out / "sensitivity.csv")))
    assert len(rows) == 9 and all(float(r["speedup"]) > 0 for r in rows)  # the 9 inner groups
    stage3 = [r for r in rows if r["group"] == "layer3.0.conv1" and r["ratio"] == "0.9"]
    assert float(stage3[0]["speedup"]) > 1.0 and int(stage3[0]["channels"]) == 7  # 64 filters, 90 % gone
    assert (out / "sensitivity.png").stat().st_size > 10_000
    written = load_space(space)
    assert list(written.params) == [f"layer{s}_{b}_conv1" for s in (1, 2, 3) for b in range(3)]
    assert all(p.high == 0.9 for p in written.params.values())  # --max-drop 100: every ratio allowed


@pytest.mark.parametrize(
    ("name", "model", "groups"),
    [("filter_prune_blocks", "resnet20", 9), ("filter_prune_blocks_resnet56", "resnet56", 27),
     ("expansion_prune_mobilenetv2", "mobilenetv2", 16)],
)  # fmt: skip
def test_shipped_per_block_spaces_are_what_block_space_writes(name, model, groups):
    from edge_tune.sensitivity import block_space, inner_groups
    from edge_tune.space import find_space

    net = create_model(model, num_classes=10, in_channels=1)
    inner = inner_groups(net, torch.zeros(1, 1, 32, 32))
    if model == "mobilenetv2":  # the expansions; the rest: the stem, two projections no add follows, the head
        assert {g[0] for g in inner} - {g[0] for g in inner if g[0].endswith(".expand")} == {
            "stem", "features.0.project", "features.16.project", "head"
        }  # fmt: skip
        inner = [g for g in inner if g[0].endswith(".expand")]
    assert len(inner) == groups
    shipped = yaml.safe_load(find_space(name).path.read_text())
    written = block_space(model, "digits", inner)
    assert shipped["params"] == written["params"] and shipped["schedule"] == written["schedule"]


def test_bad_ratios_exit_2():
    proc = subprocess.run(
        [sys.executable, "-m", "edge_tune.sensitivity", "--ratios", "0.5,1.5"], cwd=REPO, capture_output=True, text=True
    )
    assert proc.returncode == 2 and "--ratios" in proc.stderr


@pytest.fixture
def example():
    return torch.zeros(1, 1, 32, 32)
