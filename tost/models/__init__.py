"""Model registry: `model.arch` → constructor(num_classes, in_channels, width, image_size, act).

The activation is passed in as a factory; every constructor makes one activation module per
nonlinearity site, so tricks and the activation analysis can find each site by walking the modules.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from torch import Tensor, nn

from tost.errors import CheckpointError
from tost.io import load_tensors, save_tensors
from tost.models import resnet_cifar, vgg
from tost.models.resnet_cifar import ActFactory

if TYPE_CHECKING:  # config imports this registry for its names
    from tost.config import ModelConfig

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


def load_weights(model: nn.Module, obj: Any, source: str, described: str) -> None:
    """Load a tost init/checkpoint into `model`, refusing in one line one made for another model.

    `described` names the model the way the user set it up (e.g. `model.arch=resnet20 width=16`).
    """
    state = obj.get("state_dict") if isinstance(obj, Mapping) else None
    if not isinstance(state, Mapping):
        raise CheckpointError(f"{source}: not a tost init or checkpoint (no state_dict)")
    expected: dict[str, Tensor] = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shaped = [k for k in expected if k in state and tuple(state[k].shape) != tuple(expected[k].shape)]
    problems = [
        f"{len(v)} {what} ({v[0]})"
        for what, v in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", shaped))
        if v
    ]
    if problems:
        raise CheckpointError(
            f"{source}: does not fit {described}: {', '.join(problems)}; "
            "was it made with other model settings?"
        )
    model.load_state_dict(state)


def from_file(
    path: str | os.PathLike[str],
    cfg: ModelConfig,
    num_classes: int,
    shape: tuple[int, int, int],
    extend: Callable[[nn.Module, Mapping[str, Any]], nn.Module] | None = None,
) -> nn.Module:
    """The configured model with the weights of an init or checkpoint file.

    A file made for another model is refused in one line (`load_weights`). `extend(model, obj)` may
    add to the plain model what the file's network had (tricks left in it) before the weights load.
    """
    obj = load_tensors(path)
    model = build(cfg.arch, num_classes, shape, cfg.width)
    if extend is not None and isinstance(obj, Mapping):
        model = extend(model, obj)
    load_weights(model, obj, str(path), f"model.arch={cfg.arch} width={cfg.width}")
    return model


def to_file(path: str | os.PathLike[str], model: nn.Module, cfg: ModelConfig, kind: str, **meta: Any) -> None:
    """An init (`kind="init"`) or checkpoint file that `from_file` reads back.

    The state dict goes in as a CPU copy, with what the model was built as, so that a file made for
    another model is refused in one line instead of loading into the wrong shapes.
    """
    state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
    obj = {"format": f"tost-{kind}/1", "arch": cfg.arch, "width": cfg.width, **meta, "state_dict": state}
    save_tensors(path, obj)
