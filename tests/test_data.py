import pytest
import torch

from edge_tune.data import load_dataset
from edge_tune.errors import UserError


def test_digits_shapes_and_fixed_stratified_split(digits):
    assert digits.input_shape == (1, 32, 32) and digits.num_classes == 10
    assert len(digits.x_train) + len(digits.x_val) == 1797
    assert torch.bincount(digits.y_val).min() >= 17  # every class is in validation
    again = load_dataset("digits")
    assert torch.equal(again.y_val, digits.y_val) and torch.equal(again.x_val, digits.x_val)
    assert abs(float(digits.x_train.mean())) < 1e-3 and abs(float(digits.x_train.std()) - 1) < 1e-2


def test_unknown_dataset_lists_names():
    with pytest.raises(UserError, match="digits"):
        load_dataset("imagenet")
