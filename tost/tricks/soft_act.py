"""Ghost soft neurons: train with a smooth activation early, then blend back to ReLU.

ToST (Jaiswal et al., ICML 2022) replaces ReLU by Swish or Mish "at the early stage of
training" so that the sparse network's gradients flow through negative pre-activations while few
weights carry them; the final network keeps the ReLU backbone.

Deliberate differences from the original code, which used one soft activation for the whole run
(and for the dense pre-training and pruning too): the soft function is used only until `start`,
then blended linearly, f = (1 - λ)·soft + λ·ReLU, with λ reaching 1 at `end` (fractions of the
epochs); from the first epoch with λ = 1 the original `nn.ReLU` modules are back in the network
(a captured step is then captured again without the blend's kernels), so the saved network is the
plain architecture. With `start: 1, end: 1` (the original's
constant soft activation) λ never reaches 1: the blend modules then stay in the saved network, which
is the one every accuracy was measured on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

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
        if x.is_cuda:  # one kernel instead of four; on the CPU the written-out blend keeps old results' bits
            return torch.lerp(SOFT[self.soft_name](x), F.relu(x), lam)
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
        self.lam = 0.0  # λ of the last epoch started
        self._kept: dict[str, Any] = {}

    def prepare(self, model: nn.Module, mask: Mask, batches: BatchFn) -> nn.Module:
        self._swapped = swap_in(model, self.options.activation)
        return model

    def on_epoch_start(self, epoch: int, epochs: int, model: nn.Module) -> None:
        self.lam = self.options.window.ramp(epoch, epochs)
        if self.lam >= 1.0:
            self._relu_back()  # f is exactly ReLU from here on: compute it as ReLU
        else:
            set_lambda(model, self.lam)

    def _relu_back(self) -> None:
        for parent, name, relu in self._swapped:
            setattr(parent, name, relu)
        self._swapped = []

    def graph_key(self) -> object:
        return bool(self._swapped)  # the blends are in the network, or the ReLUs are back

    def finish(self, model: nn.Module) -> nn.Module:
        """Put the original ReLU objects back, unless the last epoch still blended in the soft function."""
        if self.lam < 1.0:
            self._kept = {"activation": self.options.activation, "lam": self.lam}
            self._swapped = []
        else:
            self._relu_back()
        return model

    def kept(self) -> dict[str, Any]:
        return dict(self._kept)


def swap_in(model: nn.Module, activation: str) -> list[tuple[nn.Module, str, nn.Module]]:
    """Replace every ReLU by a `BlendAct`; returns (parent, attribute, the ReLU) to put back."""
    swapped = _relu_sites(model)
    for parent, name, _ in swapped:
        setattr(parent, name, BlendAct(activation).to(_device_of(model)))
    return swapped


def set_lambda(model: nn.Module, lam: float) -> None:
    """λ of every blend, written into its buffer (a captured step reads it from there)."""
    for m in model.modules():
        if isinstance(m, BlendAct):
            m.lam.fill_(lam)


def restore(model: nn.Module, kept: dict[str, Any]) -> nn.Module:
    """The network a constant soft activation was evaluated with: blends back in, at the kept λ."""
    swap_in(model, kept["activation"])
    set_lambda(model, kept["lam"])
    return model


def _device_of(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


TRICK = TrickEntry(options=Options, make=SoftAct, restore=restore)
