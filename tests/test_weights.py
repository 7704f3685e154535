"""The user's trained weights, the baseline built from them, and the model meeting the data: no mocks."""

import collections
import sys
import types

import numpy as np
import pytest
import torch
from torch import nn

from edge_tune.baseline import describe, load_baseline
from edge_tune.contract import fit_data_to_model
from edge_tune.errors import UserError
from edge_tune.models import create_model
from edge_tune.train import TrainConfig
from edge_tune.weights import check_fits, read_state_dict

RANDOM = np.random.default_rng(3).bytes(2000)


ThinningRecipe = collections.namedtuple("ThinningRecipe", ["modules", "parameters"])  # Distiller's, as it pickles
ThinningRecipe.__module__ = "distiller.thinning"


def distiller_checkpoint(state):
    """What Distiller's save_checkpoint writes: beside the weights, the optimizer's class and thinning recipes,
    objects of classes edge_tune never imports (written while a stand-in ``distiller`` module exists)."""
    return {
        "epoch": 179, "arch": "resnet20_cifar", "optimizer_type": torch.optim.SGD,
        "state_dict": {f"module.{k}": v for k, v in state.items()},
        "thinning_recipes": [ThinningRecipe({"layer1.0.conv1": (0, [1, 2])}, {})],
    }  # fmt: skip


@pytest.fixture(scope="module")
def trained():
    torch.manual_seed(1)
    return create_model("resnet20", num_classes=10, in_channels=1).state_dict()


@pytest.mark.parametrize(
    "wrap",
    [
        pytest.param(lambda s: s, id="state-dict"),
        pytest.param(lambda s: {"epoch": 90, "arch": "resnet20_cifar", "state_dict": s}, id="distiller"),
        pytest.param(lambda s: {"model": s, "optimizer": {"lr": 0.1}, "epoch": 3}, id="torchvision-reference"),
        pytest.param(lambda s: {"model_state_dict": s, "loss": 0.1}, id="model_state_dict"),
        pytest.param(lambda s: {"net": s, "acc": 93.1}, id="net"),
        pytest.param(lambda s: {"state_dict": {f"module.{k}": v for k, v in s.items()}}, id="data-parallel"),
        pytest.param(distiller_checkpoint, id="distiller-with-recipes"),
    ],
)
def test_state_dicts_and_checkpoints_load_strictly(tmp_path, trained, wrap):
    path = tmp_path / "w.pt"
    with pytest.MonkeyPatch.context() as mp:  # Distiller's classes exist while the file is written, not read
        mp.setitem(sys.modules, "distiller", types.ModuleType("distiller"))
        mp.setitem(sys.modules, "distiller.thinning", types.SimpleNamespace(ThinningRecipe=ThinningRecipe))
        torch.save(wrap(trained), path)
    assert "distiller" not in sys.modules
    state = read_state_dict(path)
    assert list(state) == list(trained) and all(torch.equal(state[k], trained[k]) for k in trained)
    check_fits(state, create_model("resnet20", num_classes=10, in_channels=1), path, "resnet20")


@pytest.mark.parametrize(
    ("write", "message"),
    [
        pytest.param(lambda p, s: torch.save(nn.Linear(2, 2), p), "need code to be unpickled", id="pickled-module"),
        pytest.param(
            lambda p, s: torch.save({"model": nn.Linear(2, 2), "optimizer_type": torch.optim.SGD}, p),
            r"need code to be unpickled \(torch.nn.modules.linear.Linear.*torch.save\(model.state_dict\(\)",
            id="checkpoint-holding-a-module",
        ),
        pytest.param(lambda p, s: p.write_bytes(RANDOM), "cannot be read as a PyTorch file", id="random"),
        pytest.param(lambda p, s: p.write_bytes(b"\x80\x02" + RANDOM), "cannot be read as a PyTorch file", id="pickle"),
        pytest.param(
            lambda p, s: (torch.save(s, p), p.write_bytes(p.read_bytes()[:5000])),
            "truncated or not saved by torch.save",
            id="truncated",
        ),
        pytest.param(lambda p, s: torch.save({"epoch": 3, "acc": 0.9}, p), "keys: acc, epoch", id="no-weights"),
        pytest.param(lambda p, s: torch.save([1, 2], p), "holds a list, not a state dict", id="a-list"),
    ],
)
def test_files_that_are_not_a_state_dict_are_refused_by_name(tmp_path, trained, write, message):
    path = tmp_path / "bad.pt"
    write(path, trained)
    with pytest.raises(UserError, match=message) as err:
        read_state_dict(path)
    assert str(path) in str(err.value) and "--weights" in str(err.value)


def test_a_state_dict_of_another_architecture_lists_what_does_not_fit(tmp_path):
    path = tmp_path / "resnet32.pt"
    torch.save(create_model("resnet32", num_classes=100, in_channels=3).state_dict(), path)
    with pytest.raises(UserError) as err:
        check_fits(read_state_dict(path), create_model("resnet20", num_classes=10, in_channels=1), path, "resnet20")
    text = str(err.value)
    assert f"--weights {path}: does not fit model resnet20" in text
    assert "72 unexpected: layer1.3.conv1.weight" in text and "..." in text
    assert "conv1.weight (16, 3, 3, 3) where the model has (16, 1, 3, 3)" in text
    assert "fc.weight (100, 64) where the model has (10, 64)" in text


def test_weights_are_evaluated_not_trained_and_cached_by_content(tmp_path, digits, trained):
    path = tmp_path / "w.pt"
    torch.save({"state_dict": trained}, path)
    logged = []
    first = load_baseline("resnet20", digits, path, TrainConfig(epochs=1), tmp_path / "cache", logged.append)
    again = load_baseline("resnet20", digits, path, TrainConfig(epochs=1), tmp_path / "cache", logged.append)
    assert not first.cached and again.cached and first.accuracy == again.accuracy and first.train_seconds == 0
    assert len(logged) == 1 and "evaluating the weights" in logged[0]
    assert "not trained" in describe(first) and str(path) in first.source and "sha256" in first.source
    model = first.build(digits.num_classes, digits.in_channels)
    assert all(torch.equal(model.state_dict()[k], trained[k]) for k in trained)
    torch.save({"state_dict": {k: v + 1 if v.is_floating_point() else v for k, v in trained.items()}}, path)
    changed = load_baseline("resnet20", digits, path, TrainConfig(epochs=1), tmp_path / "cache", logged.append)
    assert not changed.cached and changed.cache_key != first.cache_key  # new content, new entry


def three_channel_net(num_classes):  # a constructor without in_channels, like torchvision's
    return nn.Sequential(
        nn.Conv2d(3, 8, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, num_classes)
    )


def wrong_output(num_classes, in_channels):
    return nn.Sequential(nn.Conv2d(in_channels, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 7))


def test_a_constructor_without_in_channels_gets_grey_images_repeated(digits):
    logged = []
    model, data = fit_data_to_model(f"{__name__}:three_channel_net", digits, logged.append)
    assert data.input_shape == (3, 32, 32) and torch.equal(data.x_val[:, 0], data.x_val[:, 2])
    assert model(data.x_val[:2]).shape == (2, 10)
    assert len(logged) == 1 and "repeated over 3 channels" in logged[0]
    _, unchanged = fit_data_to_model("resnet20", digits, logged.append)
    assert unchanged is digits and len(logged) == 1


def test_a_model_with_the_wrong_output_shape_is_named_with_the_shapes(digits):
    with pytest.raises(UserError, match=r"maps digits's images \(2, 1, 32, 32\) to \(2, 7\); .* shape \(2, 10\)"):
        fit_data_to_model(f"{__name__}:wrong_output", digits)


USER_MODELS = """
import torch
from torch import nn
def ignores_channels(num_classes, in_channels=3):
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, num_classes))
def thousand_classes(num_classes, in_channels=1):
    return nn.Sequential(nn.Conv2d(in_channels, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 1000))
def raises(num_classes):
    raise ValueError("pretrained weights not found")
"""


@pytest.mark.parametrize(
    ("model", "message"),
    [
        ("user_broken:f", "cannot import module 'user_broken' (RuntimeError: no GPU here)"),
        ("os:system", "model 'os:system': builtin_function_or_method 'system' is not a Python function or class"),
        ("user_models:ignores_channels", "fails on digits's images of shape (2, 1, 32, 32)"),
        ("user_models:thousand_classes", "to (2, 1000); it must return logits of shape (2, 10)"),
        ("user_models:raises", "raised ValueError when called with num_classes=10: pretrained weights not found"),
    ],
)
def test_a_model_that_breaks_the_contract_exits_2_before_anything_runs(capsys, monkeypatch, tmp_path, model, message):
    from edge_tune.run import main

    (tmp_path / "user_models.py").write_text(USER_MODELS)
    (tmp_path / "user_broken.py").write_text('raise RuntimeError("no GPU here")\n')
    monkeypatch.syspath_prepend(str(tmp_path))
    assert main(["--space", "filter_prune", "--model", model, "--check"]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
