"""VGG-11 with batch norm (Simonyan & Zisserman, 2015, configuration A) for 32x32 inputs.

Widths are half the paper's, which keeps it near 2.4 M parameters and a
forward pass of a few milliseconds. Convolutions are indexed as in
torchvision's and Distiller's ``vgg_cifar`` (``features.0``, ``features.4``,
... each followed by its batch norm and ReLU), so schedules that name them run
unchanged. Unlike Distiller's single-Linear CIFAR head, the classifier has one
hidden fully-connected layer (``classifier.0``) that structured pruning can
thin; ``classifier.2`` produces the logits.
"""

from __future__ import annotations

import torch
from torch import nn

from edge_tune.models import register_model

__all__ = ["VGG", "vgg11"]

# Output channels of each 3x3 convolution; "M" is a 2x2 max pool. VGG-11 at half width.
VGG11: tuple[int | str, ...] = (32, "M", 64, "M", 128, 128, "M", 256, 256, "M", 256, 256, "M")


class VGG(nn.Module):
    """Convolutions with batch norm and ReLU, five 2x2 max pools, then Linear-ReLU-Linear."""

    def __init__(self, layout: tuple[int | str, ...], num_classes: int, in_channels: int, hidden: int = 256) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        planes = in_channels
        for item in layout:
            if item == "M":
                layers.append(nn.MaxPool2d(2))
            else:
                out = int(item)
                layers += [nn.Conv2d(planes, out, 3, 1, 1, bias=False), nn.BatchNorm2d(out), nn.ReLU(inplace=True)]
                planes = out
        self.features = nn.Sequential(*layers)  # (N, C, H/32, W/32): 1x1 for 32x32 inputs
        # Averages whatever is left after the pools, so inputs larger than 32x32 still fit the classifier.
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        # No dropout: the pruned model is fine-tuned briefly, and dropout would slow that down.
        self.classifier = nn.Sequential(
            nn.Linear(planes, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, num_classes)
        )
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.avgpool(self.features(x))  # (N, 256, 1, 1)
        return self.classifier(torch.flatten(x, 1))  # (N, num_classes)


@register_model
def vgg11(num_classes: int = 10, in_channels: int = 3) -> nn.Module:
    return VGG(VGG11, num_classes, in_channels)
