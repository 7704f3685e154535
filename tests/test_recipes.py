"""Distiller recipes as their authors wrote them: tests/data/distiller/ holds schedules in Distiller's format
(written for these tests). Each runs, or is refused by name, file and line; no mocks."""

import copy
import re

import pytest
import torch
import yaml
from conftest import REPO
from torch import nn

from edge_tune.compression import CompressionScheduler, Pruner, PrunerSpec, parse_schedule
from edge_tune.compression.regularize import Regularization
from edge_tune.run import main
from edge_tune.train import TrainConfig, fine_tune, make_optimizer
from edge_tune.trial import activation_batches

RECIPES = REPO / "tests" / "data" / "distiller"


def check(capsys, *args):
    code = main(["--schedule", *map(str, args), "--check"])
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.parametrize(
    ("recipe", "extra", "lines"),
    [
        (
            "agp_filters_bn_fold.yaml",
            ["--truncate-lr"],
            ["1 trial, 2 fine-tuning epoch(s) each (the schedule needs 2)", "Filters, 10% -> 85%, BN folded",
             "layer3.2.conv1: 64 -> 10 filters", "final architecture: 7,119,488 MACs (17.6% of 40,518,272)"],
        ),
        (
            "ssl_channels.yaml",
            [],
            ["regularizer Channels_groups_regularizer: GroupLassoRegularizer (module.layer1.0.conv2.weight Channels",
             "thinner net_thinner: StructureRemover removes Channels", "the regularizers' thinning adds to it"],
        ),
        (
            "apoz.yaml",
            [],
            ["ActivationAPoZRankedFilterPruner_AGP, Filters, 10% -> 60%", "layer3.1.conv1: 64 -> 45 filters",
             "warning: schedule.extensions.net_thinner.arch is 'resnet56_cifar', but the model is 'resnet20'",
             "warning: schedule.extensions.net_thinner.dataset is 'cifar10', but the data are 'digits'"],
        ),
        ("slimming.yaml", [], ["regularizer bn_scales: L1Regularizer (module.layer1.0.bn2.weight Elements x0.007"]),
    ],
)  # fmt: skip
def test_recipes_are_checked_and_planned_without_training(capsys, recipe, extra, lines):
    code, out, err = check(capsys, RECIPES / recipe, *extra)
    assert code == 0, err
    for line in lines:
        assert line in out, out


def test_an_lr_scheduler_outlasting_fine_tuning_is_an_error_unless_truncated(capsys):
    code, _, err = check(capsys, RECIPES / "agp_filters_bn_fold.yaml")
    assert code == 2 and "agp_filters_bn_fold.yaml, line 42: schedule.policies[2]: lr scheduler 'pruning_lr'" in err
    assert "acts until epoch 399, but fine-tuning has 2 epoch(s)" in err and "--truncate-lr" in err
    code, _, err = check(capsys, RECIPES / "agp_filters_bn_fold.yaml", "--epochs", "400")
    assert code == 0, err


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        ({}, r"splicing\.yaml, line 5: schedule\.pruners\.splicing\.class: SplicingPruner is not supported: "
             r"dynamic network surgery"),
        ({"class": "RandomLevelStructureParameterPruner"}, "RandomLevelStructureParameterPruner is not supported: "
                                                            "it prunes at random"),
        ({"class": "BernoulliFilterPruner_AGP"}, "BernoulliFilterPruner_AGP is not supported"),
        ({"class": "LevelPruner"}, r"line 14: schedule\.policies\[0\]\.pruner\.args\.mini_batch_pruning_frequency: "
                                   r"1 is not supported: edge_tune prunes at epoch starts only"),
    ],
)  # fmt: skip
def test_refused_pruners_and_policy_args_are_named_with_file_and_line(capsys, tmp_path, edit, message):
    doc = yaml.safe_load((RECIPES / "splicing.yaml").read_text())
    text = (RECIPES / "splicing.yaml").read_text()
    if edit:
        text = text.replace("class: SplicingPruner", f"class: {edit['class']}")
        text = re.sub(r"    low_thresh_mult.*?sensitivities:\n.*?\n", "    desired_sparsity: 0.5\n    weights: "
                      "[module.layer1.0.conv1.weight]\n    group_type: Filters\n", text, flags=re.S)  # fmt: skip
        if edit["class"] == "LevelPruner":
            text = text.replace("    group_type: Filters\n", "")
    path = tmp_path / "splicing.yaml"
    path.write_text(text)
    code, _, err = check(capsys, path)
    assert code == 2 and re.search(message, err), err
    assert doc["pruners"]["splicing"]["class"] == "SplicingPruner"


@pytest.mark.parametrize(
    ("kind", "args", "message"),
    [
        ("pruner", {"use_double_copies": True}, "use_double_copies: True is not supported: training unmasked"),
        ("pruner", {"levels": {"layer1.0.conv1.weight": 0.5}}, "levels: .* is not supported: give each pruner"),
        ("pruner", {"fold_batchnorm": "yes"}, "fold_batchnorm: must be true or false"),
        ("pruner", {"mask_gradients": True}, "mask_gradients: needs mask_on_forward_only: true"),
        ("pruner", {"bogus": 1}, r"args\.bogus: unsupported key; supported: discard_masks_at_minibatch_end"),
        ("lr_scheduler", {"x": 1}, "Distiller reads no args for a lr_scheduler policy"),
    ],
)
def test_policy_args_are_executed_accepted_or_refused_by_name(kind, args, message):
    doc = {
        "pruners": {"p": {"class": "LevelPruner", "desired_sparsity": 0.5, "weights": ["conv1.weight"]}},
        "lr_schedulers": {"lr": {"class": "StepLR", "step_size": 1}},
        "policies": [{"pruner": {"instance_name": "p"}, "epochs": [0]}, {"lr_scheduler": {"instance_name": "lr"}}],
    }
    doc["policies"][0 if kind == "pruner" else 1][kind]["args"] = args
    with pytest.raises(ValueError, match=message):
        parse_schedule(doc)
    accepted = {"keep_mask": True, "mask_on_forward_only": True, "mask_gradients": True, "fold_batchnorm": True}
    doc["policies"] = [{"pruner": {"instance_name": "p", "args": accepted}, "epochs": [0]}, doc["policies"][1]]
    doc["policies"][1]["lr_scheduler"].pop("args", None)
    assert parse_schedule(doc).policies[0].fold_batchnorm


def test_fold_batchnorm_ranks_the_weights_the_batch_norm_scales(resnet20, example):
    conv, bn = resnet20.layer1[0].conv1, resnet20.layer1[0].bn1
    with torch.no_grad():
        conv.weight.copy_(torch.arange(1, 17).view(16, 1, 1, 1).float().expand_as(conv.weight))  # L1 rises with f
        bn.running_var.copy_(torch.arange(1, 17).float() ** 4)  # gamma / sigma falls much faster
    spec = PrunerSpec("p", "L1RankedStructureParameterPruner", "Filters", 0.5, ("layer1.0.conv1.weight",))
    kept = {}
    for fold in (False, True):
        model = copy.deepcopy(resnet20)
        pruner = Pruner(model, example)
        pruner.prune(spec, 0.5, fold_batchnorm=fold)
        kept[fold] = (model.layer1[0].conv1.weight.detach().flatten(1).abs().sum(1) > 0).nonzero().flatten().tolist()
    assert kept[False] == list(range(8, 16))  # the largest weights
    assert kept[True] == list(range(8))  # the largest once scaled by gamma / sqrt(running_var + eps)


def test_apoz_prunes_the_filters_whose_feature_maps_are_mostly_zero(resnet20, example, digits):
    conv, bn = resnet20.layer1[0].conv1, resnet20.layer1[0].bn1
    dead = [3, 7, 11, 12]
    with torch.no_grad():
        conv.weight[dead] *= 50  # the largest weights, so L1 ranking keeps them ...
        bn.bias[dead] = -1e4  # ... but their maps are all zero after the ReLU
    spec = PrunerSpec("p", "ActivationAPoZRankedFilterPruner", "Filters", 0.25, ("layer1.0.conv1.weight",))
    pruner = Pruner(resnet20, example)
    pruner.record_activations(["layer1.0.conv1"], activation_batches(digits, TrainConfig(batch_size=64)))
    apoz, _ = pruner.activations["layer1.0.conv1"]
    assert torch.all(apoz[dead] == 100) and apoz.shape == (16,)
    pruner.prune(spec, 0.25)
    zeroed = (conv.weight.detach().flatten(1).abs().sum(1) == 0).nonzero().flatten().tolist()
    assert zeroed == dead


def test_regularizer_penalties_are_distillers():
    conv = nn.Conv2d(2, 3, 1, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([[3.0, 4.0], [0.0, 0.0], [1.0, 0.0]]).view(3, 2, 1, 1))
    model = nn.Sequential(conv, nn.BatchNorm2d(3))

    def loss(cls, regim, criteria=None):
        doc = {"regularizers": {"r": {"class": cls, "reg_regims": {"0.weight": regim}}},
               "policies": [{"regularizer": {"instance_name": "r"}, "epochs": [0]}]}  # fmt: skip
        if criteria:
            doc["regularizers"]["r"]["threshold_criteria"] = criteria
        s = parse_schedule(doc)
        return Regularization(model, s.regularizers), s.regularizers_at(0)

    reg, active = loss("GroupLassoRegularizer", [0.5, "Filters"])
    assert float(reg.loss(active).detach()) == pytest.approx(0.5 * (5 + 0 + 1))  # filters' L2 norms
    reg, active = loss("GroupLassoRegularizer", [2.0, "Channels"])
    assert float(reg.loss(active).detach()) == pytest.approx(2.0 * (10**0.5 + 4), rel=1e-6)  # input channels' L2 norms
    reg, active = loss("L1Regularizer", 0.1)
    assert float(reg.loss(active).detach()) == pytest.approx(0.1 * 8)
    reg, active = loss("GroupLassoRegularizer", [1.0, "Filters"], "Mean_Abs")  # means 3.5, 0, 0.5
    reg.threshold(active)
    assert conv.weight.flatten(1).tolist() == [[3.0, 4.0], [0.0, 0.0], [0.0, 0.0]]
    with pytest.raises(ValueError, match=r"reg_regims\.0\.weight: group type 4D \(whole layers\) is not supported"):
        loss("GroupLassoRegularizer", [1.0, "4D"])


def test_group_lasso_zeroes_channels_and_the_structure_remover_thins_them(digits, example):
    from edge_tune.compression import count_macs_params
    from edge_tune.data import Dataset
    from edge_tune.models import create_model

    torch.manual_seed(0)
    model = create_model("resnet20", num_classes=10, in_channels=1)
    schedule = parse_schedule(yaml.safe_load((RECIPES / "ssl_channels.yaml").read_text()))
    cfg = TrainConfig(epochs=3, lr=0.05, seed=0)
    digits = Dataset.from_tensors(  # a fifth of the training split is enough to drive channels to zero
        "digits", digits.x_train[:320], digits.y_train[:320], digits.x_val[:64], digits.y_val[:64], 10
    )
    compression = CompressionScheduler(model, schedule, example, lambda m: make_optimizer(m, cfg))
    seen = []

    def epoch_end(epoch, loss, acc):
        compression.on_epoch_end(epoch)
        seen.append(sum(m.conv2.in_channels for m in (model.layer1[0], model.layer1[1], model.layer2[1])))

    fine_tune(model, digits, cfg, on_epoch_start=compression.on_epoch_start, on_epoch_end=epoch_end,
              penalty=compression.regularizer_loss)  # fmt: skip
    report = compression.finish()
    assert seen[0] == seen[1] == 16 + 16 + 32 and seen[2] < seen[1]  # thinned at epoch 2, as the policy says
    thinned = {g.members[0]: g for g in report.groups}
    assert set(thinned) <= {"layer1.0.conv2", "layer1.1.conv2", "layer2.1.conv2"} and thinned
    assert all(g.pruner == "net_thinner" and g.group_type == "Channels" for g in report.groups)
    assert report.macs_after == count_macs_params(model, example)[0] < report.macs_before


def test_a_space_with_every_parameter_fixed_is_one_trial_and_a_schedule_file_has_no_parameters(capsys, tmp_path):
    text = (REPO / "search_spaces" / "filter_prune.yaml").read_text()
    doc = yaml.safe_load(text)
    doc["params"] = {name: 0.5 for name in doc["params"]}  # plain values: fixed, not searched
    fixed = tmp_path / "fixed.yaml"
    fixed.write_text(yaml.safe_dump(doc, sort_keys=False))
    assert main(["--space", str(fixed), "--check"]) == 0
    out = capsys.readouterr().out
    assert "would run: 1 trial" in out and "Filters, 50%" in out
    assert main(["--space", str(fixed), "--check", "--num-samples", "3"]) == 2
    assert "--num-samples 3: --space" in capsys.readouterr().err
    templated = tmp_path / "templated.yaml"
    templated.write_text(yaml.safe_dump(doc["schedule"], sort_keys=False))  # still holds ${stage1_ratio}
    code, _, err = check(capsys, templated)
    assert code == 2 and "is a parameter, and a schedule given with --schedule runs as written" in err
    assert "use --space" in check(capsys, fixed)[2]  # a space file is not a schedule
    assert main(["--space", str(fixed), "--schedule", str(templated)]) == 2
    assert "give --space (a search) or --schedule" in capsys.readouterr().err
