"""CIFAR ResNets: the 6n+2 family (He et al. 2016, §4.2) and the ResNet-18 variant with a 3×3 stem.

Every nonlinearity is its own module built by `act()`, never a shared instance or `F.relu`, so a
trick can find each activation site by walking the modules and swap it (ghost soft neurons), and
activation analysis can hook each one separately. Projection shortcuts are 1×1 conv + BN (option B),
as in the original training code; the conv is a `PointwiseConv`, which keeps CPU training off an
oneDNN bug of strided 1×1 convolutions (tost.models.layers).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from tost.models.layers import PointwiseConv

ActFactory = Callable[[], nn.Module]


class BasicBlock(nn.Module):
    """conv-BN-act-conv-BN, plus shortcut, then act."""

    def __init__(self, cin: int, cout: int, stride: int, act: ActFactory) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.act1 = act()
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(PointwiseConv(cin, cout, stride), nn.BatchNorm2d(cout))
        self.act2 = act()

    def forward(self, x: Tensor) -> Tensor:
        out = self.act1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.act2(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """Stem 3×3 conv, stages of BasicBlocks (stride 2 after the first), global average pool, fc."""

    def __init__(
        self, widths: list[int], blocks: list[int], num_classes: int, in_channels: int, act: ActFactory
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.act1 = act()
        cin = widths[0]
        stages = []
        for i, (w, n) in enumerate(zip(widths, blocks, strict=True)):
            layers = []
            for j in range(n):
                layers.append(BasicBlock(cin, w, 2 if (i > 0 and j == 0) else 1, act))
                cin = w
            stages.append(nn.Sequential(*layers))
        self.layers = nn.ModuleList(stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)
        init_weights(self)

    def forward(self, x: Tensor) -> Tensor:
        out = self.act1(self.bn1(self.conv1(x)))
        for stage in self.layers:
            out = stage(out)
        return self.fc(torch.flatten(self.pool(out), 1))


def init_weights(model: nn.Module) -> None:
    """Kaiming-normal (fan_out) convs, BN at 1/0, default Linear: the usual CIFAR recipe."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def _six_n_plus_two(depth: int) -> Callable[..., nn.Module]:
    n = (depth - 2) // 6

    def make(num_classes: int, in_channels: int, width: int, image_size: int, act: ActFactory) -> nn.Module:
        return CifarResNet([width, 2 * width, 4 * width], [n] * 3, num_classes, in_channels, act)

    make.__doc__ = f"CIFAR ResNet-{depth}: {n} blocks per stage, widths w, 2w, 4w."
    return make


resnet20 = _six_n_plus_two(20)
resnet32 = _six_n_plus_two(32)
resnet56 = _six_n_plus_two(56)


def resnet18(num_classes: int, in_channels: int, width: int, image_size: int, act: ActFactory) -> nn.Module:
    """CIFAR ResNet-18: 3×3 stem, no max-pool, [2, 2, 2, 2] blocks of widths w, 2w, 4w, 8w (w=64)."""
    return CifarResNet([width, 2 * width, 4 * width, 8 * width], [2, 2, 2, 2], num_classes, in_channels, act)
