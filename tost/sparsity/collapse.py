"""Layer collapse: layers a mask empties, and whether any signal still gets from input to output.

At high sparsity some methods prune whole layers (SynFlow's paper is about this "layer collapse";
SNIP empties residual convs of a ResNet-20 at 0.98). A residual network still computes something
when a conv inside a block is empty, because the shortcut goes around it; it computes nothing that
depends on the input when every path is cut, e.g. an empty first conv or classifier. So an empty layer
is a result to record and flag, and only a cut network is an error.

The test is structural and exact: in a float64 copy whose kept weights are 1, pruned weights 0,
biases 0 and BatchNorm the identity (eval mode), every activation of a non-negative input stays
non-negative, so the output is positive exactly when some path of kept weights joins input and output.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping

import torch
from torch import nn

from tost.sparsity.mask import Mask, prunable


def empty_layers(mask: Mask) -> list[str]:
    """Names of the layers whose every weight is pruned, in mask order."""
    return [n for n, t in mask.tensors.items() if not bool(t.any())]


def kept_per_layer(mask: Mask) -> dict[str, int]:
    """How many weights each layer keeps."""
    return {n: int(t.sum()) for n, t in mask.tensors.items()}


@torch.no_grad()
def signal_passes(model: nn.Module, keep: Mapping[str, torch.Tensor], input_shape: tuple[int, ...]) -> bool:
    """Whether some path of kept weights joins the input to the output (`keep`: name → bool tensor)."""
    net = copy.deepcopy(model).to("cpu", torch.float64).eval()
    for name, w in prunable(net, include_first=True, include_last=True).items():
        w.copy_(keep[name].to(w.dtype) if name in keep else torch.ones_like(w))
    for m in net.modules():
        if getattr(m, "bias", None) is not None and isinstance(m.bias, torch.Tensor):
            m.bias.zero_()
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_mean.zero_()
            m.running_var.fill_(1.0)
            if m.weight is not None:
                m.weight.fill_(1.0)
    out = net(torch.ones((1, *input_shape), dtype=torch.float64))
    return bool(out.sum() > 0)


def cut_by(model: nn.Module, mask: Mask, input_shape: tuple[int, ...]) -> list[str]:
    """For a network no signal passes: the empty layers whose weights alone would restore a path.

    All empty layers when no single one restores it (none when no layer is empty).
    """
    empty = empty_layers(mask)
    single = [n for n in empty if signal_passes(model, {**mask.tensors, n: torch.ones_like(mask.tensors[n])},
                                                 input_shape)]  # fmt: skip
    return single or empty
