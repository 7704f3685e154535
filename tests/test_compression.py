import pytest
import torch
from torch import nn

from edge_tune.compression import PrunerSpec, apply_pruners, parse_schedule, resolve_weights
from edge_tune.compression.lr import ScheduledLR


def spec(weights, sparsity=0.5, group_type="Filters", name="p"):
    return PrunerSpec(name, "L1RankedStructureParameterPruner", group_type, sparsity, tuple(weights))


def test_filters_are_physically_removed_and_macs_drop(resnet20, example):
    report = apply_pruners(resnet20, [spec(["module.layer1.0.conv1.weight", "layer2.1.conv1"])], example)
    assert resnet20.layer1[0].conv1.out_channels == 8 and resnet20.layer1[0].bn1.num_features == 8
    assert resnet20.layer1[0].conv2.in_channels == 8
    assert resnet20.layer2[1].conv1.out_channels == 16
    assert report.macs_after < report.macs_before and report.params_after < report.params_before
    assert resnet20(example).shape == (1, 10)


def test_lowest_l1_filters_go(resnet20, example):
    conv = resnet20.layer1[0].conv1
    norms = conv.weight.detach().abs().sum(dim=(1, 2, 3))
    keep = torch.sort(torch.argsort(norms)[8:]).values
    expected = conv.weight.detach()[keep].clone()
    apply_pruners(resnet20, [spec(["layer1.0.conv1.weight"])], example)
    assert torch.equal(resnet20.layer1[0].conv1.weight.detach(), expected)


def test_residual_coupled_filters_prune_once_as_a_group(resnet20, example):
    # conv2 outputs of a stage meet in residual adds: one group, pruned once.
    report = apply_pruners(resnet20, [spec([r"layer3\.\d\.conv2\.weight"], sparsity=0.25)], example)
    assert len(report.groups) == 1 and report.groups[0].channels_after == 48
    widths = {resnet20.layer3[i].conv2.out_channels for i in range(3)}
    assert widths == {48} and resnet20.layer3[0].downsample[0].out_channels == 48 and resnet20.fc.in_features == 48
    assert resnet20(example).shape == (1, 10)


def test_channel_pruning_shrinks_the_producer(resnet20, example):
    apply_pruners(resnet20, [spec(["layer2.1.conv2.weight"], 0.5, "Channels")], example)
    assert resnet20.layer2[1].conv2.in_channels == 16 and resnet20.layer2[1].conv1.out_channels == 16


def test_zero_sparsity_changes_nothing(resnet20, example):
    report = apply_pruners(resnet20, [spec(["layer1.0.conv1.weight"], 0.0)], example)
    assert report.macs_after == report.macs_before


def test_conflicting_sparsities_on_one_group_are_refused(resnet20, example):
    pruners = [spec(["layer3.0.conv2.weight"], 0.25, name="a"), spec(["layer3.1.conv2.weight"], 0.5, name="b")]
    with pytest.raises(ValueError, match="coupled"):
        apply_pruners(resnet20, pruners, example)


def test_unknown_weight_lists_the_convolutions(resnet20):
    with pytest.raises(ValueError) as err:
        resolve_weights(resnet20, ("module.layer9.0.conv1.weight",), "schedule.pruners.p.weights")
    assert "schedule.pruners.p.weights" in str(err.value) and "layer1.0.conv1.weight" in str(err.value)


def _doc(**over):
    doc = {
        "version": 1,
        "pruners": {
            "p": {
                "class": "L1RankedStructureParameterPruner",
                "group_type": "Filters",
                "desired_sparsity": 0.5,
                "weights": ["layer1.0.conv1.weight"],
            }
        },
        "lr_schedulers": {"lr": {"class": "MultiStepLR", "milestones": [1], "gamma": 0.1}},
        "policies": [
            {"pruner": {"instance_name": "p"}, "epochs": [0]},
            {"lr_scheduler": {"instance_name": "lr"}, "starting_epoch": 0, "ending_epoch": 5, "frequency": 1},
        ],
    }
    doc.update(over)
    return doc


def test_schedule_policies_and_lr_steps():
    schedule = parse_schedule(_doc())
    assert [p.name for p in schedule.one_shot_pruners()] == ["p"]
    model = nn.Linear(2, 2)
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    lr = ScheduledLR(schedule)
    seen = []
    for epoch in range(3):
        lr.on_epoch_start(epoch, opt)
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        lr.on_epoch_end(epoch)
    assert seen == pytest.approx([1.0, 0.1, 0.1])


@pytest.mark.parametrize(
    ("over", "key"),
    [
        ({"version": 2}, "schedule.version"),
        ({"quantizers": {}}, "schedule.quantizers"),
        (
            {
                "policies": [
                    {"pruner": {"instance_name": "p"}, "epochs": [2]},
                    {"lr_scheduler": {"instance_name": "lr"}, "epochs": [0]},
                ]
            },
            "acts after epoch 0",
        ),
        ({"policies": [{"lr_scheduler": {"instance_name": "lr"}, "epochs": [0]}]}, "schedule.pruners.p"),
        ({"extensions": {"t": {"class": "Quantizer"}}}, "schedule.extensions.t.class"),
    ],
)
def test_schedule_errors_name_the_key(over, key):
    with pytest.raises(ValueError, match=key.replace(".", r"\.").replace("[", r"\[")):
        parse_schedule(_doc(**over)).one_shot_pruners()


def test_bad_sparsity_and_group_type():
    bad = _doc()
    bad["pruners"]["p"]["desired_sparsity"] = 1.5
    with pytest.raises(ValueError, match="desired_sparsity"):
        parse_schedule(bad)
    bad["pruners"]["p"].update(desired_sparsity=0.5, group_type="Rows")
    with pytest.raises(ValueError, match="group_type"):
        parse_schedule(bad)
