"""CIFAR-style ResNets (He et al., 2016, section 4.2).

Parameter names follow Distiller's ``resnet_cifar`` (``layer1.0.conv1``,
``layer2.0.downsample.0``, ``fc``) so that Distiller schedules that name
weights run unchanged. Like Distiller's, the shortcut that changes shape is a
1x1 convolution with batch norm (option B), which structured pruning can follow.
"""

from __future__ import annotations

import torch
from torch import nn

from edge_tune.models import register_model

__all__ = ["CifarResNet", "resnet20", "resnet32", "resnet56"]


class BasicBlock(nn.Module):
    def __init__(self, inplanes: int, planes: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu2 = nn.ReLU(inplace=True)
        self.downsample: nn.Module | None = None
        if stride != 1 or inplanes != planes:
            self.downsample = nn.Sequential(nn.Conv2d(inplanes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu2(out + identity)


class CifarResNet(nn.Module):
    """Three stages of ``blocks`` basic blocks with 16, 32 and 64 channels."""

    def __init__(self, blocks: int, num_classes: int, in_channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = self._stage(16, 16, blocks, stride=1)  # (N, 16, H, W)
        self.layer2 = self._stage(16, 32, blocks, stride=2)  # (N, 32, H/2, W/2)
        self.layer3 = self._stage(32, 64, blocks, stride=2)  # (N, 64, H/4, W/4)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(64, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    @staticmethod
    def _stage(inplanes: int, planes: int, blocks: int, stride: int) -> nn.Sequential:
        first = BasicBlock(inplanes, planes, stride)
        return nn.Sequential(first, *(BasicBlock(planes, planes, 1) for _ in range(blocks - 1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))  # (N, 16, H, W)
        x = self.layer3(self.layer2(self.layer1(x)))  # (N, 64, H/4, W/4)
        return self.fc(torch.flatten(self.avgpool(x), 1))


@register_model
def resnet20(num_classes: int = 10, in_channels: int = 3) -> nn.Module:
    return CifarResNet(3, num_classes, in_channels)


@register_model
def resnet32(num_classes: int = 10, in_channels: int = 3) -> nn.Module:
    return CifarResNet(5, num_classes, in_channels)


@register_model
def resnet56(num_classes: int = 10, in_channels: int = 3) -> nn.Module:
    return CifarResNet(9, num_classes, in_channels)
