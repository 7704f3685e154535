"""Sieve's screen (screen.py): one candidate's architecture, its speed-up and its proxy, each screened once.
The device is the one piece not real here: ``measure`` stands in for the actor and counts its calls."""

from types import SimpleNamespace

import torch

from edge_tune.baseline import Baseline
from edge_tune.models import create_model
from edge_tune.proxy import proxy_top1
from edge_tune.screen import DeviceScreen
from edge_tune.space import find_space
from edge_tune.train import Accuracy


def test_each_architecture_is_measured_and_scored_once_on_a_fixed_validation_sample(digits):
    torch.manual_seed(0)
    model = create_model("resnet20", num_classes=10, in_channels=1)
    baseline = Baseline("resnet20", "digits", model.state_dict(), Accuracy(50.0, 90.0), 0.0, "k", False)
    measured: list[bytes] = []

    def measure(onnx: bytes) -> SimpleNamespace:
        measured.append(onnx)
        return SimpleNamespace(speedup=1.25)

    space = find_space("filter_prune_blocks")
    screen = DeviceScreen(space, baseline, digits, measure, threshold=40.0, val_images=100)
    assert len(screen.val) == 100 and len(digits.val) > 100  # a sample of the validation split, by class
    assert torch.bincount(screen.val.labels, minlength=10).min() >= 9
    half = {p: 0.5 for p in space.params}
    first = screen(half)
    assert first.speedup == 1.25 and len(measured) == 1
    assert screen(dict(half)) == first and len(measured) == 1  # the same architecture: nothing measured again
    pruned = screen(dict(half, **{next(iter(space.params)): 0.0}))
    assert pruned.key != first.key and len(measured) == 2
    assert screen.baseline.proxy == proxy_top1(baseline.build(10, 1), digits, 256, val=screen.val)
    assert screen({p: 0.0 for p in space.params}) is screen.baseline and len(measured) == 2  # the baseline's own
