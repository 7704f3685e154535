import pytest
import torch
from torch import nn

from edge_tune.compression import PrunerSpec, apply_pruners, count_macs_params
from edge_tune.errors import UserError
from edge_tune.export import to_onnx, verify_export
from edge_tune.models import available_models, create_model, fit_to_state_dict

ZOO = ["resnet20", "resnet32", "resnet56", "mobilenetv2", "vgg11"]

# What each model's pruning test names: free layers, and layers coupled to others
# (residual adds in the ResNets' conv2 and MobileNet's projections; expand -> depthwise in MobileNet).
PRUNED = {
    "resnet20": (r"layer1\.0\.conv1", r"layer2\.\d+\.conv1", r"layer3\.0\.conv2"),
    "resnet32": (r"layer1\.0\.conv1", r"layer2\.\d+\.conv1", r"layer3\.0\.conv2"),
    "resnet56": (r"layer1\.0\.conv1", r"layer2\.\d+\.conv1", r"layer3\.0\.conv2"),
    "mobilenetv2": ("stem", r"features\.\d+\.expand", r"features\.2\.project"),
    "vgg11": (r"features\.(0|4|8|15|25)",),
}
DEPTHWISE = {"mobilenetv2": 17}  # depthwise convolutions per model, none elsewhere


def spec(weights, sparsity=0.5, group_type="Filters"):
    return PrunerSpec("p", "L1RankedStructureParameterPruner", group_type, sparsity, tuple(weights))


def build(name, num_classes=10, in_channels=1):
    torch.manual_seed(0)
    return create_model(name, num_classes=num_classes, in_channels=in_channels).eval()


def depthwise(model):
    return [m for m in model.modules() if isinstance(m, nn.Conv2d) and m.groups > 1]


def test_the_zoo_is_registered():
    assert set(ZOO) <= set(available_models())


@pytest.mark.parametrize("name", ZOO)
@pytest.mark.parametrize(("in_channels", "num_classes"), [(1, 10), (3, 100)])
def test_zoo_models_map_images_to_logits(name, in_channels, num_classes):
    model = build(name, num_classes, in_channels)
    with torch.no_grad():
        assert model(torch.zeros(2, in_channels, 32, 32)).shape == (2, num_classes)


@pytest.mark.parametrize("name", ZOO)
def test_pruning_keeps_the_structure(name):
    model, example = build(name), torch.randn(2, 1, 32, 32)
    macs_before, _ = count_macs_params(model, example)
    report = apply_pruners(model, [spec(PRUNED[name])], example)
    assert report.groups and all(g.channels_after < g.channels_before for g in report.groups)
    with torch.no_grad():
        assert model(example).shape == (2, 10)
    convs = depthwise(model)
    assert len(convs) == DEPTHWISE.get(name, 0)
    for conv in convs:
        assert conv.groups == conv.in_channels == conv.out_channels and conv.weight.shape[1] == 1
    logits = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
    assert logits.out_features == 10
    assert report.macs_after == count_macs_params(model, example)[0] < macs_before
    verify_export(to_onnx(model, example), model)


def test_mobilenet_depthwise_filters_follow_their_expand_filters():
    model, example = build("mobilenetv2"), torch.zeros(1, 1, 32, 32)
    block = model.features[3]
    expand = block.expand.weight.detach().clone()  # (96, 16, 1, 1)
    dw = block.depthwise.weight.detach().clone()  # (96, 1, 3, 3)
    apply_pruners(model, [spec([r"features\.3\.expand"])], example)
    assert block.expand.out_channels == block.depthwise.groups == block.depthwise_bn.num_features == 48
    # Each kept expand filter is found among the old ones; its depthwise filter must be the one it had.
    kept = [int((expand == row).all(dim=(1, 2, 3)).nonzero()) for row in block.expand.weight.detach()]
    assert torch.equal(block.depthwise.weight.detach(), dw[kept])
    assert block.project.in_channels == 48


def test_mobilenet_residual_projections_prune_together():
    model, example = build("mobilenetv2"), torch.zeros(1, 1, 32, 32)
    report = apply_pruners(model, [spec([r"features\.2\.project"])], example)
    # features.2 adds its input, features.1's output: both projections and every reader shrink as one.
    assert len(report.groups) == 1
    f = model.features
    assert f[1].project.out_channels == f[2].project.out_channels == f[2].expand.in_channels == 8
    assert f[3].expand.in_channels == 8 and f[1].expand.out_channels == 48
    assert model(example).shape == (1, 10)


def test_vgg_last_conv_pruning_thins_only_the_hidden_layer_input():
    model, example = build("vgg11"), torch.zeros(1, 1, 32, 32)
    apply_pruners(model, [spec(["features.25"])], example)
    hidden, logits = model.classifier[0], model.classifier[2]
    assert (hidden.in_features, hidden.out_features) == (model.features[25].out_channels, 256) == (128, 256)
    assert (logits.in_features, logits.out_features) == (256, 10)


def test_vgg_hidden_fully_connected_layer_can_be_pruned():
    model, example = build("vgg11"), torch.zeros(1, 1, 32, 32)
    apply_pruners(model, [spec(["classifier.0"])], example)
    assert model.classifier[0].out_features == model.classifier[2].in_features == 128
    assert model.classifier[2].out_features == 10
    with pytest.raises(ValueError, match="classifier"):  # its outputs are the classes
        apply_pruners(model, [spec(["classifier.2"])], example)


def test_mobilenet_depthwise_channels_can_be_pruned():
    model, example = build("mobilenetv2"), torch.zeros(1, 1, 32, 32)
    report = apply_pruners(model, [spec([r"features\.3\.depthwise"], group_type="Channels")], example)
    assert report.groups[0].channels_before == 96
    assert model.features[3].depthwise.in_channels == model.features[3].expand.out_channels == 48


def test_distiller_parameter_names():
    names = dict(create_model("resnet20", num_classes=10, in_channels=1).named_parameters())
    assert "layer1.0.conv1.weight" in names and "layer2.0.downsample.0.weight" in names and "fc.weight" in names


def test_readable_module_names():
    mobilenet = dict(build("mobilenetv2").named_modules())
    for name in ("stem", "features.3.expand", "features.3.depthwise", "features.3.project", "head", "classifier"):
        assert name in mobilenet
    assert "features.0.expand" not in mobilenet  # expansion 1: the first block has no expand convolution
    vgg = dict(build("vgg11").named_modules())
    assert isinstance(vgg["features.25"], nn.Conv2d) and isinstance(vgg["classifier.0"], nn.Linear)


def test_unknown_model_lists_the_zoo():
    with pytest.raises(UserError) as err:
        create_model("resnet21", num_classes=10, in_channels=1)
    for name in available_models():
        assert name in str(err.value)


def test_user_model_by_module_function():
    model = create_model("edge_tune.models.resnet:resnet20", num_classes=3, in_channels=1)
    assert model(torch.zeros(1, 1, 32, 32)).shape == (1, 3)
    with pytest.raises(UserError, match="no function"):
        create_model("edge_tune.models.resnet:nosuch", num_classes=3, in_channels=1)
    with pytest.raises(UserError, match="cannot import"):
        create_model("no_such_pkg.mod:fn", num_classes=3, in_channels=1)


@pytest.mark.parametrize("name", ZOO)
def test_pruned_architecture_is_rebuilt_from_its_weights(name):
    model = build(name)
    example = torch.randn(2, 1, 32, 32)
    apply_pruners(model, [spec(PRUNED[name])], example[:1])
    with torch.no_grad():
        expected = model(example)
    rebuilt = fit_to_state_dict(build(name), model.state_dict())
    assert count_macs_params(rebuilt, example[:1]) == count_macs_params(model, example[:1])
    with torch.no_grad():
        assert torch.allclose(rebuilt(example), expected, atol=1e-5)


def test_rebuild_rejects_a_resized_layer_of_another_kind():
    class Odd(nn.Module):
        def __init__(self, width):
            super().__init__()
            self.norm = nn.LayerNorm(width)

    with pytest.raises(ValueError, match="norm"):
        fit_to_state_dict(Odd(8), Odd(4).state_dict())


# -- the ImageNet models against torchvision's own names, shapes and outputs -------------------------

IMAGENET = ["resnet18", "mobilenet_v2", "mobilenet_v3_small"]


def _manifest_tools():
    import importlib.util
    import json

    from conftest import REPO

    path = REPO / "benchmarks" / "torchvision_manifest.py"
    spec_ = importlib.util.spec_from_file_location("torchvision_manifest", path)
    module = importlib.util.module_from_spec(spec_)
    spec_.loader.exec_module(module)
    return module, json.loads((REPO / "tests" / "data" / "torchvision_manifest.json").read_text())


@pytest.mark.parametrize("name", IMAGENET)
def test_imagenet_models_have_torchvisions_names_shapes_and_outputs(name):
    tools, manifest = _manifest_tools()
    model = create_model(name, num_classes=1000, in_channels=1).eval()  # in_channels is not taken: RGB
    state = model.state_dict()
    assert [[k, list(v.shape)] for k, v in state.items()] == manifest[name]["keys"]
    model.load_state_dict({k: tools.formula_tensor(k, tuple(v.shape), v.dtype) for k, v in state.items()})
    with torch.no_grad():
        logits = model(tools.formula_input())[0]
    expected = torch.tensor(manifest[name]["logits_first_10"])
    assert torch.allclose(logits[:10], expected, rtol=1e-3, atol=1e-3 * float(expected.abs().max()))
    assert float(logits.std()) == pytest.approx(manifest[name]["logits_std"], rel=1e-3)


@pytest.mark.parametrize("name", IMAGENET)
def test_imagenet_models_prune_and_export_at_224(name):
    model = create_model(name, num_classes=10, in_channels=3).eval()
    example = torch.zeros(1, 3, 224, 224)
    first = next(n for n, m in model.named_modules() if isinstance(m, nn.Conv2d) and m.groups == 1 and n != "conv1")
    before = count_macs_params(model, example)[0]
    apply_pruners(model, [spec([first.replace(".", r"\.") + r"$"])], example)
    assert count_macs_params(model, example)[0] < before
    verify_export(to_onnx(model, example), model)
