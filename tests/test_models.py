import pytest
import torch

from edge_tune.errors import UserError
from edge_tune.models import available_models, create_model


@pytest.mark.parametrize("name", ["resnet20", "resnet32", "resnet56"])
def test_zoo_models_map_images_to_logits(name):
    model = create_model(name, num_classes=7, in_channels=3).eval()
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 7)


def test_distiller_parameter_names():
    names = dict(create_model("resnet20", num_classes=10, in_channels=1).named_parameters())
    assert "layer1.0.conv1.weight" in names and "layer2.0.downsample.0.weight" in names and "fc.weight" in names


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
