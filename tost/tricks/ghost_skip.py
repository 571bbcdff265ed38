"""Ghost skip connections: dense 1×1 conv + BN "jumps" around the 3×3 convs, early in training only.

ToST (Jaiswal et al., ICML 2022) adds extra skip connections while the sparse network is
young, to give its gradients short paths, and trains the final network without them. As in the
original code, each jump takes the input of a 3×3 conv, applies a 1×1 conv (same stride, no bias)
and its own BN, and adds the result to the output of the BN that follows the conv, before the
activation. The sites are found from the model's own structure, not from its class: every k×k conv
(k > 1) that its parent module follows directly with a BatchNorm2d, except the network's first conv
(the stem, which the original leaves alone). In a ResNet BasicBlock that is one jump over conv1
(in → out, block stride) and one over conv2 (out → out); in VGG one over every conv but the first.

Deliberate differences from the original code (jumps kept for the whole run and in the evaluated,
saved network): the jumps are multiplied by a gate g (1 until `start`, linear decay to 0 at `end`,
fractions of the epochs), are skipped entirely once g = 0, and `finish` removes them, leaving the
plain architecture. With `start: 1, end: 1` (the original's) the gate never closes: the jumps then
stay in the saved network, which is the one every accuracy was measured on, and count as weights
it is evaluated with. They are attached by forward hooks and live under one extra attribute
(`ghost_skip`), so no existing parameter is renamed: the mask and its enforcement are untouched and
the ghosts are never pruned. Jump convs are filled with the constant `init` (1e-4 upstream); the
BN after it re-normalises that tiny output, so the branch is not negligible at g = 1.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from tost.errors import ConfigError
from tost.models.layers import PointwiseConv
from tost.schedules import Window
from tost.sparsity.mask import Mask
from tost.tricks.base import BatchFn, Trick, TrickEntry


@dataclass(frozen=True)
class Options:
    """`tricks.ghost_skip`: when the gate decays (fractions of the epochs), and the jump conv fill."""

    start: float
    end: float
    init: float

    def __post_init__(self) -> None:
        Window(self.start, self.end)  # validates the window

    @property
    def window(self) -> Window:
        return Window(self.start, self.end)


def jump_sites(model: nn.Module) -> list[tuple[str, nn.Conv2d, nn.BatchNorm2d]]:
    """(conv name, conv, the BN right after it) for every conv a jump goes around, in module order.

    A site is a k×k conv (k > 1) that its parent follows directly with a BatchNorm2d in its
    registration order, which is how conv → BN is written in every model of the registry; 1×1
    convs (projection shortcuts) and the stem are not jumped over.
    """
    stem = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    sites: list[tuple[str, nn.Conv2d, nn.BatchNorm2d]] = []
    for name, parent in model.named_modules():
        for (n, a), (_, b) in itertools.pairwise(parent.named_children()):
            if (
                isinstance(a, nn.Conv2d)
                and a is not stem
                and a.kernel_size != (1, 1)
                and isinstance(b, nn.BatchNorm2d)
            ):
                sites.append((f"{name}.{n}" if name else n, a, b))
    return sites


def make_jump(conv: nn.Conv2d, fill: float) -> nn.Sequential:
    """1×1 conv (conv's channels and stride, no bias) filled with `fill`, then a fresh BN.

    A `PointwiseConv`: the jumps over each later stage's first conv are strided 1×1 convs, which
    oneDNN gets wrong in channels-last at narrow widths (tost.models.layers).
    """
    jump = nn.Sequential(
        PointwiseConv(conv.in_channels, conv.out_channels, conv.stride),
        nn.BatchNorm2d(conv.out_channels),
    )
    nn.init.constant_(jump[0].weight, fill)
    return jump.to(device=conv.weight.device, dtype=conv.weight.dtype)


class Ghosts(nn.Module):
    """The jump paths, keyed by conv name, and the gate they are multiplied by."""

    def __init__(self, jumps: dict[str, nn.Module]) -> None:
        super().__init__()
        self.jumps = nn.ModuleDict({k.replace(".", "__"): v for k, v in jumps.items()})
        self.register_buffer("gate", torch.ones(()), persistent=False)
        self.active = True  # False once the gate is 0: the hooks then skip the jumps entirely


class GhostSkip(Trick):
    """Attach gated jumps in `prepare`, decay the gate per epoch, remove every trace in `finish`."""

    def __init__(self, options: Options) -> None:
        self.options = options
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        self._gate = 1.0  # g of the last epoch started
        self._kept: dict[str, Any] = {}

    def prepare(self, model: nn.Module, mask: Mask, batches: BatchFn) -> nn.Module:
        sites = jump_sites(model)
        if not sites:
            raise ConfigError(f"tricks.ghost_skip: found no conv + BN to jump over in {type(model).__name__}")
        ghosts = Ghosts({n: make_jump(conv, self.options.init) for n, conv, _ in sites})
        model.ghost_skip = ghosts.to(device=sites[0][1].weight.device)
        for (_, conv, bn), jump in zip(sites, ghosts.jumps.values(), strict=True):
            self._handles += _attach(ghosts, jump, conv, bn)
        return model

    def on_epoch_start(self, epoch: int, epochs: int, model: nn.Module) -> None:
        g = 1.0 - self.options.window.ramp(epoch, epochs)
        model.ghost_skip.gate.fill_(g)
        model.ghost_skip.active = g > 0
        # Skipped jumps get no gradient either way; saying so lets DDP leave them out of its buckets.
        model.ghost_skip.requires_grad_(g > 0)
        self._gate = g

    def finish(self, model: nn.Module) -> nn.Module:
        """Detach the hooks and delete the jumps, unless the gate is still open in the last epoch."""
        if self._gate > 0:
            self._kept = {"gate": self._gate}
            return model
        for h in self._handles:
            h.remove()
        self._handles = []
        if hasattr(model, "ghost_skip"):
            del model.ghost_skip
        return model

    def kept(self) -> dict[str, Any]:
        return dict(self._kept)

    def graph_key(self) -> object:
        return self._gate > 0  # the jumps are computed or skipped


def restore(model: nn.Module, kept: dict[str, Any]) -> nn.Module:
    """The network the jumps were evaluated in: gated jumps attached again (weights load after)."""
    GhostSkip(Options(start=1.0, end=1.0, init=0.0)).prepare(model, Mask({}), lambda: iter(()))
    model.ghost_skip.gate.fill_(kept["gate"])
    return model


def _attach(ghosts: Ghosts, jump: nn.Module, conv: nn.Conv2d, bn: nn.BatchNorm2d) -> list:
    """The conv's hook computes g·jump(conv input); the BN's hook adds it to the BN output."""
    slot: dict[str, Tensor] = {}  # holds the jump output from the conv's call to the BN's, never longer

    def after_conv(_m: nn.Module, args: tuple[Tensor, ...], _out: Tensor) -> None:
        if ghosts.active:
            slot["jump"] = ghosts.gate.to(args[0].dtype) * jump(args[0])

    def after_bn(_m: nn.Module, _args: tuple[Tensor, ...], out: Tensor) -> Tensor | None:
        extra = slot.pop("jump", None)
        return None if extra is None else out + extra

    return [conv.register_forward_hook(after_conv), bn.register_forward_hook(after_bn)]


TRICK = TrickEntry(options=Options, make=GhostSkip, restore=restore)
