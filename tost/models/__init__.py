"""Model registry: `model.arch` → constructor(num_classes, in_channels, width, image_size, act).

The activation is passed in as a factory so tricks can change it; every constructor makes one
activation module per nonlinearity site.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from tost.models import resnet_cifar, vgg
from tost.models.resnet_cifar import ActFactory

Constructor = Callable[[int, int, int, int, ActFactory], nn.Module]

MODELS: dict[str, Constructor] = {
    "resnet20": resnet_cifar.resnet20,
    "resnet32": resnet_cifar.resnet32,
    "resnet56": resnet_cifar.resnet56,
    "resnet18": resnet_cifar.resnet18,
    "vgg16": vgg.vgg16,
}


def build(
    arch: str, num_classes: int, shape: tuple[int, int, int], width: int, act: ActFactory = nn.ReLU
) -> nn.Module:
    """Build `arch` for images of `shape` (C, H, W); callers validated `arch` through the config."""
    return MODELS[arch](num_classes, shape[0], width, shape[1], act)
