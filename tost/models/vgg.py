"""VGG-16 with BatchNorm for small images (configuration D, Simonyan & Zisserman 2015).

Max-pools that would shrink the feature map below 1×1 are dropped, so the same network runs on
8×8 digits and 32×32 CIFAR; the head is global average pooling and one Linear layer, as in the
pruning literature's CIFAR VGGs.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from tost.models.resnet_cifar import ActFactory, init_weights

CFG_D: list[int | str] = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512]


class VGG(nn.Module):
    """conv-BN-act stacks separated by max-pools, then global average pool and fc."""

    def __init__(
        self, cfg: list[int | str], num_classes: int, in_channels: int, image_size: int, act: ActFactory
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        cin, size = in_channels, image_size
        for v in cfg:
            if v == "M":
                if size >= 2:
                    layers.append(nn.MaxPool2d(2))
                    size //= 2
                continue
            layers += [nn.Conv2d(cin, int(v), 3, padding=1, bias=False), nn.BatchNorm2d(int(v)), act()]
            cin = int(v)
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)
        init_weights(self)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(torch.flatten(self.pool(self.features(x)), 1))


def vgg16(num_classes: int, in_channels: int, width: int, image_size: int, act: ActFactory) -> nn.Module:
    """VGG-16-BN; `width` is the first stage's channels (64 in the paper), later stages scale with it."""
    cfg = [v if v == "M" else max(1, int(v) * width // 64) for v in CFG_D]
    return VGG(cfg, num_classes, in_channels, image_size, act)
