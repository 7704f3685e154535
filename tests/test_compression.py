import re

import pytest
import torch
import yaml
from torch import nn

from edge_tune.compression import (
    PrunerSpec,
    agp_target,
    apply_pruners,
    check_schedule_fits,
    parse_schedule,
    resolve_weights,
)
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
            {"lr_scheduler": {"instance_name": "lr"}, "starting_epoch": 0, "ending_epoch": 3, "frequency": 1},
        ],
    }
    doc.update(over)
    return doc


def test_schedule_version_is_optional_as_distiller_never_reads_it():
    doc = _doc()
    del doc["version"]
    assert parse_schedule(doc).pruners.keys() == {"p"}


def test_schedule_policies_and_lr_steps():
    schedule = parse_schedule(_doc())
    assert [spec.name for spec, _ in schedule.pruners_at(0)] == ["p"] and not schedule.pruners_at(1)
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
        ({"regularizers": {"r": {"class": "L2Regularizer"}}}, "schedule.regularizers.r.class"),
        (
            {
                "policies": [
                    {"pruner": {"instance_name": "p"}, "epochs": [5]},
                    {"lr_scheduler": {"instance_name": "lr"}, "epochs": [0]},
                ]
            },
            "schedule.policies[0]: pruner 'p' acts until epoch 5, but fine-tuning has 3 epoch",
        ),
        (  # each late policy is named with its own last epoch, not the schedule's
            {
                "pruners": {
                    "p": {**_doc()["pruners"]["p"], "class": "L1RankedStructureParameterPruner"},
                    "q": {**_doc()["pruners"]["p"]},
                },
                "policies": [
                    {"pruner": {"instance_name": "q"}, "epochs": [1]},
                    {"pruner": {"instance_name": "p"}, "starting_epoch": 0, "ending_epoch": 5, "frequency": 2},
                    {"lr_scheduler": {"instance_name": "lr"}, "epochs": [0]},
                ],
            },
            "schedule.policies[1]: pruner 'p' acts until epoch 4, but",
        ),
        (  # an open-ended policy that starts after fine-tuning would never act
            {"policies": [{"pruner": {"instance_name": "p"}, "starting_epoch": 3}], "lr_schedulers": {}},
            "schedule.policies[0]: pruner 'p' acts until epoch 3, but",
        ),
        ({"policies": [{"lr_scheduler": {"instance_name": "lr"}, "epochs": [0]}]}, "schedule.pruners.p"),
        ({"extensions": {"t": {"class": "Quantizer"}}}, "schedule.extensions.t.class"),
    ],
)
def test_schedule_errors_name_the_key(over, key):
    with pytest.raises(ValueError, match=key.replace(".", r"\.").replace("[", r"\[")):
        check_schedule_fits(parse_schedule(_doc(**over)), epochs=3)


def test_bad_sparsity_and_group_type():
    bad = _doc()
    bad["pruners"]["p"]["desired_sparsity"] = 1.5
    with pytest.raises(ValueError, match="desired_sparsity"):
        parse_schedule(bad)
    bad["pruners"]["p"].update(desired_sparsity=0.5, group_type="Blocks")
    with pytest.raises(ValueError, match="group_type"):
        parse_schedule(bad)


# -- the schedule run through fine-tuning --------------------------------------------------------

HYBRID = """
version: 1
pruners:
  filter_pruner:
    class: L1RankedStructureParameterPruner_AGP
    initial_sparsity: 0.10
    final_sparsity: 0.50
    group_type: Filters
    weights: [module.layer2.0.conv1.weight, module.layer2.1.conv1.weight, module.layer2.2.conv1.weight]
  fine_pruner:
    class: AutomatedGradualPruner
    initial_sparsity: 0.05
    final_sparsity: 0.70
    weights: [module.layer3.1.conv1.weight, module.layer3.1.conv2.weight]
  fc_pruner:
    class: L1RankedStructureParameterPruner_AGP
    initial_sparsity: 0.05
    final_sparsity: 0.50
    group_type: Rows
    weights: [module.fc.weight]
lr_schedulers:
  pruning_lr: {class: StepLR, step_size: 2, gamma: 0.5}
extensions:
  net_thinner: {class: FilterRemover, thinning_func_str: remove_filters, arch: resnet20_cifar, dataset: cifar10}
policies:
  - pruner: {instance_name: filter_pruner}
    starting_epoch: 0
    ending_epoch: 6
    frequency: 2
  - extension: {instance_name: net_thinner}
    epochs: [6]
  - pruner: {instance_name: fine_pruner}
    starting_epoch: 6
    ending_epoch: 10
    frequency: 2
  - pruner: {instance_name: fc_pruner}
    starting_epoch: 6
    ending_epoch: 10
    frequency: 2
  - lr_scheduler: {instance_name: pruning_lr}
    starting_epoch: 0
    ending_epoch: 400
    frequency: 1
"""


def _run_epochs(scheduler, model, epochs, opt=None):
    """Fire the schedule epoch by epoch with one real SGD step each (random gradients)."""
    opt = opt or torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    for epoch in range(epochs):
        opt = scheduler.on_epoch_start(epoch, opt) or opt
        for p in model.parameters():
            p.grad = 0.01 * torch.randn_like(p)  # small: the weights stay in a sane range
        opt.step()
        scheduler.on_epoch_end(epoch)
    return opt


def test_agp_follows_the_cubic_ramp_to_the_final_sparsity():
    schedule = parse_schedule(yaml.safe_load(HYBRID))
    spec, policy = schedule.pruners["filter_pruner"], schedule.policy_of("filter_pruner")
    targets = [agp_target(spec, policy, e) for e in (0, 2, 4)]
    assert targets[0] == pytest.approx(0.10) and targets[-1] == pytest.approx(0.50)
    assert targets[1] == pytest.approx(0.50 + (0.10 - 0.50) * (1 - 2 / 4) ** 3)  # fastest at first
    assert schedule.last_epoch() == 8


def test_hybrid_recipe_masks_thins_and_keeps_fine_zeros(resnet20, example):
    from edge_tune.compression import CompressionScheduler
    from edge_tune.export import structure_hash, to_onnx

    schedule = parse_schedule(yaml.safe_load(HYBRID))
    torch.manual_seed(0)
    scheduler = CompressionScheduler(resnet20, schedule, example, lambda m: torch.optim.SGD(m.parameters(), lr=0.1))
    planned, _ = scheduler.planned_model()
    _run_epochs(scheduler, resnet20, 4)  # epochs 0..3: filters masked to 10 %, then 35 %; not thinned yet
    conv = resnet20.layer2[0].conv1
    zero_filters = int((conv.weight.detach().abs().sum(dim=(1, 2, 3)) == 0).sum())
    assert conv.out_channels == 32 and zero_filters == int(
        agp_target(schedule.pruners["filter_pruner"], schedule.policy_of("filter_pruner"), 2) * 32
    )
    opt = torch.optim.SGD(resnet20.parameters(), lr=0.1)
    new = scheduler.on_epoch_start(4, opt)  # the AGP's last step: 50 %
    assert new is None and resnet20.layer2[0].conv1.out_channels == 32
    new = scheduler.on_epoch_start(6, opt)  # net_thinner: filters go, the optimizer is rebuilt
    assert new is not None and new is not opt
    assert resnet20.layer2[0].conv1.out_channels == 16 and resnet20.layer2[1].conv2.in_channels == 16
    assert resnet20.layer2[1].conv2.out_channels == 32  # the residual width is not this pruner's
    scheduler.on_epoch_start(8, new)  # the fine and row pruners' last step
    report = scheduler.finish()
    w = resnet20.layer3[1].conv1.weight.detach()
    assert int((w == 0).sum()) == int(0.70 * w.numel())  # fine-grained: zeros, same shape
    fc = resnet20.fc.weight.detach()
    assert fc.shape == (10, 64) and int((fc.abs().sum(dim=0) == 0).sum()) == int(0.5 * 64)  # rows: masked columns
    assert report.macs_after < report.macs_before and report.zeros > 0
    assert structure_hash(to_onnx(resnet20, example)) == structure_hash(to_onnx(planned, example))


@pytest.mark.parametrize("group_type", ["Filters", "Channels"])
def test_a_masked_network_computes_what_the_thinned_one_does(resnet20, example, group_type):
    from edge_tune.compression import Pruner

    torch.manual_seed(1)
    x = torch.randn(4, 1, 32, 32)
    pruner = Pruner(resnet20, example)
    opt = torch.optim.SGD(resnet20.parameters(), lr=0.1, momentum=0.9)
    for target in (0.1, 0.3, 0.5):  # progressive, with training steps in between
        pruner.prune(spec([r"layer2\.\d\.conv1", r"layer3\.\d\.conv2"], 0.5, group_type), target)
        for p in resnet20.parameters():
            p.grad = 0.01 * torch.randn_like(p)
        opt.step()
        pruner.apply_masks()
    masked, params = resnet20.eval()(x), sum(p.numel() for p in resnet20.parameters())
    assert pruner.thin() and sum(p.numel() for p in resnet20.parameters()) < params
    assert torch.allclose(resnet20.eval()(x), masked, rtol=1e-4, atol=1e-5)


def test_masks_survive_optimizer_steps_and_thinning_rebuilds_the_optimizer(resnet20, example):
    from edge_tune.compression import CompressionScheduler

    doc = yaml.safe_load(HYBRID)
    doc["lr_schedulers"]["pruning_lr"]["step_size"] = 1
    schedule = parse_schedule(doc)
    scheduler = CompressionScheduler(
        resnet20, schedule, example, lambda m: torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9)
    )
    opt = _run_epochs(scheduler, resnet20, 9)
    assert resnet20.layer2[0].conv1.out_channels == 16  # thinned at epoch 6
    assert opt.param_groups[0]["lr"] == pytest.approx(0.1 * 0.5**9)  # the lr schedule went on across the rebuild
    assert all(p is q for p, q in zip(opt.param_groups[0]["params"], resnet20.parameters(), strict=True))
    w = resnet20.layer3[1].conv2.weight.detach()
    assert int((w == 0).sum()) >= int(0.70 * w.numel())  # zeros held through momentum steps


def test_level_pruner_zeros_the_smallest_weights_in_place(resnet20, example):
    doc = _doc()
    doc["pruners"]["p"] = {"class": "LevelPruner", "desired_sparsity": 0.6, "weights": ["layer1.0.conv1.weight"]}
    w0 = resnet20.layer1[0].conv1.weight.detach().clone()
    apply_pruners(resnet20, list(parse_schedule(doc).pruners.values()), example)
    w = resnet20.layer1[0].conv1.weight.detach()
    zeroed = w == 0
    assert w.shape == w0.shape and int(zeroed.sum()) == int(0.6 * w.numel())
    assert w0[zeroed].abs().max() <= w0[~zeroed].abs().min() and torch.equal(w[~zeroed], w0[~zeroed])


def test_sensitivity_pruner_cuts_below_a_multiple_of_the_std(resnet20, example):
    doc = _doc()
    doc["pruners"]["p"] = {"class": "SensitivityPruner", "sensitivities": {"module.layer1.0.conv1.weight": 0.5, "*": 0}}
    w0 = resnet20.layer1[0].conv1.weight.detach().clone()
    other = resnet20.layer2[0].conv1.weight.detach().clone()
    apply_pruners(resnet20, list(parse_schedule(doc).pruners.values()), example)
    expected = w0 * (w0.abs() > 0.5 * w0.std())
    assert torch.equal(resnet20.layer1[0].conv1.weight.detach(), expected) and (expected == 0).any()
    assert torch.equal(resnet20.layer2[0].conv1.weight.detach(), other)  # '*': 0 keeps every nonzero weight


def test_rows_are_for_fully_connected_layers_and_the_stem_keeps_its_channels(resnet20, example):
    with pytest.raises(ValueError, match="matches no Linear weight"):
        apply_pruners(resnet20, [spec(["layer1.0.conv1.weight"], 0.5, "Rows")], example)
    with pytest.raises(ValueError, match="reads the model's input"):
        apply_pruners(resnet20, [spec(["conv1.weight"], 0.5, "Channels")], example)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"class": "SplicingPruner"}, "SplicingPruner is not supported: dynamic network surgery"),
        ({"class": "MagicPruner"}, "unsupported pruner 'MagicPruner'; supported: L1Ranked"),
        ({"initial_sparsity": 0.9}, "initial_sparsity: 0.9 is above final_sparsity"),
        ({"group_dependency": "Max"}, "only 'Leader'"),
        ({"final_sparsity": None}, "final_sparsity: required"),
    ],
)
def test_agp_pruner_errors_name_the_key(change, message):
    doc = yaml.safe_load(HYBRID)
    doc["pruners"]["filter_pruner"].update(change)
    doc["pruners"]["filter_pruner"] = {k: v for k, v in doc["pruners"]["filter_pruner"].items() if v is not None}
    with pytest.raises(ValueError, match=re.escape(message)):
        parse_schedule(doc)


@pytest.mark.parametrize(
    ("quantizer", "message"),
    [
        ({"class": "QuantAwareTrainRangeLinearQuantizer"}, "unsupported quantizer"),
        ({"class": "PostTrainLinearQuantizer", "bits_parameters": 4}, "bits_parameters: only 8"),
        ({"class": "PostTrainLinearQuantizer", "mode": "FLOAT"}, "mode: 'FLOAT'"),
        ({"class": "PostTrainLinearQuantizer", "clip_acts": "AVG"}, "clip_acts: unsupported key"),
    ],
)
def test_quantizer_errors_name_the_key(quantizer, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        parse_schedule(_doc(quantizers={"q": quantizer}))


def test_post_train_quantizer_defaults():
    q = parse_schedule(_doc(quantizers={"q": {"class": "PostTrainLinearQuantizer"}})).quantizer
    assert q is not None and q.symmetric and q.per_channel_wts and q.calibration_images == 300
