"""SynFlow (Tanaka et al., NeurIPS 2020): data-free pruning that conserves the synaptic flow.

The network is linearised (every weight, bias and BatchNorm tensor replaced by its absolute value,
in float64 so that the product over a deep network's layers does not overflow), an all-ones image
[1, C, H, W] goes in, R = Σ output, and score = |w ⊙ ∂R/∂w|. This runs `prune.synflow.iters` times
(100, as the original) with the exponential schedule: iteration e keeps d^((e+1)/E) of the weights
(d = 1 - sparsity), each time scoring the copy with the current mask applied; the last iteration
hits `prune.sparsity` exactly. No data is read. Used as a ToST mask (Jaiswal et al., ICML 2022).

Differences from the original scorer library: BatchNorm runs in eval mode (upstream runs it in
train mode, which makes the score depend on the batch statistics of an all-ones image and corrupts
the running statistics), float64 instead of float32, and the work happens on a copy, so nothing needs
restoring. The schedule is SynFlow's own iteration: `prune.rounds` is ignored.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from tost.sparsity.mask import Mask
from tost.sparsity.methods.base import Finder, Progress, PruneContext, Pruned
from tost.sparsity.schedule import Scores, select


@dataclass(frozen=True)
class Options:
    """How many score-and-prune iterations the exponential schedule takes."""

    iters: int

    def __post_init__(self) -> None:
        if self.iters < 1:
            raise ValueError(f"iters must be >= 1, got {self.iters}")


def linearised(model: nn.Module) -> nn.Module:
    """A float64, eval-mode copy with |t| for every floating tensor (parameters and buffers)."""
    net = copy.deepcopy(model).double().eval()
    with torch.no_grad():
        for t in net.state_dict().values():
            if t.is_floating_point():
                t.abs_()
    return net


def synflow_scores(net: nn.Module, weights: Mapping[str, Tensor], input_shape: tuple[int, ...]) -> Scores:
    """|w ⊙ ∂R/∂w| with R = Σ net(1): each weight's share of the total path product."""
    w0 = next(iter(weights.values()))
    net.zero_grad(set_to_none=True)
    net(torch.ones((1, *input_shape), dtype=w0.dtype, device=w0.device)).sum().backward()
    return {
        n: (w.detach() * w.grad).abs() if w.grad is not None else torch.zeros_like(w)
        for n, w in weights.items()
    }


def density_schedule(sparsity: float, iters: int) -> list[float]:
    """Sparsity after each iteration: 1 - d^((e+1)/E), the last one exactly `sparsity`."""
    out = [1.0 - (1.0 - sparsity) ** ((e + 1) / iters) for e in range(iters)]
    out[-1] = sparsity
    return out


def find_mask(ctx: PruneContext, opts: Options) -> Pruned:
    """`iters` rounds of score-and-prune on the linearised copy, under the exponential schedule."""
    net = linearised(ctx.model)
    weights = ctx.weights(net)
    dense = {n: w.detach().clone() for n, w in weights.items()}
    mask: Mask | None = None
    progress = Progress("synflow", opts.iters)
    for i, s in enumerate(density_schedule(ctx.sparsity, opts.iters), 1):
        if mask is not None:
            with torch.no_grad():
                for n, w in weights.items():
                    w.copy_(dense[n] * mask.tensors[n].to(w.device))
        mask = select(synflow_scores(net, weights, ctx.input_shape), s, ctx.scope, previous=mask)
        progress.step(i, "iterations")
    assert mask is not None
    return Pruned(mask)


METHOD = Finder(find=find_mask, options=Options)
