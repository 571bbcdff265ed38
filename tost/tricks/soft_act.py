"""Ghost soft neurons: train with a smooth activation early, then blend back to ReLU.

ToST (Jaiswal et al., ICML 2022) replaces ReLU by Swish or Mish "at the early stage of
training" so that the sparse network's gradients flow through negative pre-activations while few
weights carry them; the final network keeps the ReLU backbone.

Deliberate differences from the original code, which used one soft activation for the whole run
(and for the dense pre-training and pruning too): the soft function is used only until `start`,
then blended linearly, f = (1 - λ)·soft + λ·ReLU, with λ reaching 1 at `end` (fractions of the
epochs); from there on the net computes ReLU exactly, and `finish` puts the original `nn.ReLU`
modules back, so the saved network is the plain architecture.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tost.schedules import Window
from tost.sparsity.mask import Mask
from tost.tricks.base import BatchFn, Trick, TrickEntry

SOFT = {"swish": F.silu, "mish": F.mish}


@dataclass(frozen=True)
class Options:
    """`tricks.soft_act`: which soft function, and the epoch fractions of the blend window."""

    activation: Literal["swish", "mish"]
    start: float
    end: float

    def __post_init__(self) -> None:
        Window(self.start, self.end)  # validates the window

    @property
    def window(self) -> Window:
        return Window(self.start, self.end)


class BlendAct(nn.Module):
    """(1 - λ)·soft(x) + λ·relu(x); exact soft at λ = 0 and exact ReLU at λ = 1.

    λ is a non-persistent buffer so that changing it needs no recompilation and never enters a
    state_dict; the activation analysis finds this module by `is_activation`.
    """

    is_activation = True

    def __init__(self, soft: str) -> None:
        super().__init__()
        self.soft_name = soft
        self.register_buffer("lam", torch.zeros(()), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        lam = self.lam.to(x.dtype)
        return (1 - lam) * SOFT[self.soft_name](x) + lam * F.relu(x)

    def extra_repr(self) -> str:
        return f"soft={self.soft_name}"


def _relu_sites(model: nn.Module) -> list[tuple[nn.Module, str, nn.Module]]:
    """(parent, attribute, module) for every ReLU module; the models make one per site."""
    return [
        (parent, name, child)
        for parent in model.modules()
        for name, child in parent.named_children()
        if isinstance(child, nn.ReLU)
    ]


class SoftAct(Trick):
    """Swap every ReLU for a `BlendAct` in `prepare`, move λ per epoch, swap ReLU back in `finish`."""

    def __init__(self, options: Options) -> None:
        self.options = options
        self._swapped: list[tuple[nn.Module, str, nn.Module]] = []

    def prepare(self, model: nn.Module, mask: Mask, batches: BatchFn) -> nn.Module:
        self._swapped = _relu_sites(model)
        for parent, name, _ in self._swapped:
            blend = BlendAct(self.options.activation)
            setattr(parent, name, blend.to(_device_of(model)))
        return model

    def on_epoch_start(self, epoch: int, epochs: int, model: nn.Module) -> None:
        lam = self.options.window.ramp(epoch, epochs)
        for m in model.modules():
            if isinstance(m, BlendAct):
                m.lam.fill_(lam)

    def finish(self, model: nn.Module) -> nn.Module:
        """Put the original ReLU objects back: the trained network is the plain architecture."""
        for parent, name, relu in self._swapped:
            setattr(parent, name, relu)
        self._swapped = []
        return model


def _device_of(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


TRICK = TrickEntry(options=Options, make=SoftAct)
