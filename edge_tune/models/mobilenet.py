"""MobileNetV2 (Sandler et al., 2018) for 32x32 inputs.

The stage table is the paper's (table 2), with the CIFAR changes that are
usual for small images: no stride in the stem and none in the second stage,
so the network downsamples three times (32 -> 16 -> 8 -> 4) instead of five.
A width multiplier of 0.5 keeps it near 0.6 M parameters.

Convolutions are named for their role, ``features.3.expand``,
``features.3.depthwise``, ``features.3.project``, with their batch norms
beside them (``features.3.expand_bn``), so that a pruning schedule can pick
them with a short regular expression such as ``features\\.\\d+\\.expand``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from edge_tune.models import register_model

__all__ = ["InvertedResidual", "MobileNetV2", "mobilenetv2"]

# (expansion t, output channels c, blocks n, stride of the first block s), at width 1.
STAGES: tuple[tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1),
    (6, 24, 2, 1),  # stride 2 in the paper
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)


def _round8(channels: float) -> int:
    """Round to a multiple of 8, never more than 10% below ``channels`` (as the reference code does)."""
    rounded = max(8, int(channels + 4) // 8 * 8)
    return rounded + 8 if rounded < 0.9 * channels else rounded


class InvertedResidual(nn.Module):
    """1x1 expand, 3x3 depthwise, 1x1 linear projection; the input is added back when shapes allow.

    With ``expansion == 1`` there is no expand convolution (``self.expand is None``):
    the depthwise convolution reads the block's input directly.
    """

    def __init__(self, inplanes: int, planes: int, stride: int, expansion: int) -> None:
        super().__init__()
        hidden = inplanes * expansion
        self.expand: nn.Conv2d | None = None
        self.expand_bn: nn.BatchNorm2d | None = None
        if expansion != 1:
            self.expand = nn.Conv2d(inplanes, hidden, 1, bias=False)
            self.expand_bn = nn.BatchNorm2d(hidden)
        self.depthwise = nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False)
        self.depthwise_bn = nn.BatchNorm2d(hidden)
        self.project = nn.Conv2d(hidden, planes, 1, bias=False)
        self.project_bn = nn.BatchNorm2d(planes)
        self.residual = stride == 1 and inplanes == planes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x
        if self.expand is not None and self.expand_bn is not None:
            out = F.relu6(self.expand_bn(self.expand(out)))  # (N, t*C_in, H, W)
        out = F.relu6(self.depthwise_bn(self.depthwise(out)))  # (N, t*C_in, H/s, W/s)
        # No activation after the projection: the paper's linear bottleneck.
        out = self.project_bn(self.project(out))  # (N, C_out, H/s, W/s)
        return out + x if self.residual else out


class MobileNetV2(nn.Module):
    """Stem, 17 inverted residual blocks, a 1x1 head convolution, pooling and a linear classifier."""

    def __init__(self, num_classes: int, in_channels: int, width: float = 0.5, head_channels: int = 640) -> None:
        super().__init__()
        planes = _round8(32 * width)
        self.stem = nn.Conv2d(in_channels, planes, 3, 1, 1, bias=False)  # stride 1 for 32x32 inputs
        self.stem_bn = nn.BatchNorm2d(planes)
        blocks: list[nn.Module] = []
        for t, c, n, s in STAGES:
            out = _round8(c * width)
            for i in range(n):
                blocks.append(InvertedResidual(planes, out, s if i == 0 else 1, t))
                planes = out
        self.features = nn.Sequential(*blocks)  # (N, C, H/8, W/8)
        self.head = nn.Conv2d(planes, head_channels, 1, bias=False)
        self.head_bn = nn.BatchNorm2d(head_channels)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(head_channels, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu6(self.stem_bn(self.stem(x)))  # (N, 16, H, W)
        x = self.features(x)  # (N, 160, H/8, W/8)
        x = F.relu6(self.head_bn(self.head(x)))  # (N, head_channels, H/8, W/8)
        return self.classifier(torch.flatten(self.avgpool(x), 1))


@register_model
def mobilenetv2(num_classes: int = 10, in_channels: int = 3) -> nn.Module:
    return MobileNetV2(num_classes, in_channels)
