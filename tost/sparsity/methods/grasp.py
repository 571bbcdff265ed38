"""GraSP (Wang et al., ICLR 2020): keep the weights that preserve gradient flow, at initialisation.

g = Σ_b ∇_w L_b(logits/T) (no graph), then Hg = Σ_b ∇_w (g · ∇_w L_b) by double backpropagation over
the same batches, both restricted to the prunable weights; score = w ⊙ Hg, signed.

Sign convention: the HIGHEST w ⊙ Hg are kept, i.e. the lowest are pruned. This is what the original
scorer library does (its comment says "negate" but it does not), and it is GraSP's rule "remove the
top fraction of S(-w) = -w ⊙ Hg". Temperature T = 200 as upstream (`prune.grasp.temperature`).

Differences from upstream: both passes see the same batches (upstream iterates a shuffled loader
twice), g is taken over the weights that are still alive (w != 0), so a later round measures the
gradient flow of the pruned network, and the score is not divided by |Σ score| (a positive constant,
which does not change the ranking).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tost.errors import MaskError
from tost.sparsity.methods.base import Batch, Progress, PruneContext, Scored
from tost.sparsity.schedule import Scores


@dataclass(frozen=True)
class Options:
    """Softmax temperature applied to the logits in both passes."""

    temperature: float

    def __post_init__(self) -> None:
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")


def _grads(out: Tensor, params: Sequence[Tensor], create_graph: bool = False) -> list[Tensor]:
    grads = torch.autograd.grad(out, params, create_graph=create_graph, allow_unused=True)
    return [torch.zeros_like(p) if g is None else g for g, p in zip(grads, params, strict=True)]


def hessian_gradient(
    net: nn.Module, params: Sequence[Tensor], batches: Sequence[Batch], temperature: float
) -> list[Tensor]:
    """H g for the summed loss over `batches`, H and g both taken with respect to `params`."""
    if not batches:
        raise MaskError("the pruning data loader gave no batches; check prune.batches and prune.batch_size")
    alive = [(p.detach() != 0).to(p.dtype) for p in params]
    progress = Progress("grasp", 2 * len(batches))
    g = [torch.zeros_like(p) for p in params]
    for i, (x, y) in enumerate(batches, 1):
        for acc, grad in zip(g, _grads(F.cross_entropy(net(x) / temperature, y), params), strict=True):
            acc.add_(grad.detach())
        progress.step(i, "batches (gradient, then Hessian-gradient)")
    g = [gi * a for gi, a in zip(g, alive, strict=True)]
    hg = [torch.zeros_like(p) for p in params]
    for i, (x, y) in enumerate(batches, len(batches) + 1):
        grads = _grads(F.cross_entropy(net(x) / temperature, y), params, create_graph=True)
        z = sum((gi * gc).sum() for gi, gc in zip(g, grads, strict=True))
        for acc, h in zip(hg, _grads(z, params), strict=True):
            acc.add_(h)
        progress.step(i, "batches (gradient, then Hessian-gradient)")
    return hg


def score(ctx: PruneContext, net: nn.Module, opts: Options) -> Scores:
    """The GraSP score w ⊙ Hg (signed; higher = keep)."""
    weights = ctx.weights(net)
    net.train()  # as upstream: BatchNorm uses batch statistics, identical in both passes
    hg = hessian_gradient(net, list(weights.values()), list(ctx.batches()), opts.temperature)
    return {n: w.detach() * h for (n, w), h in zip(weights.items(), hg, strict=True)}


METHOD = Scored(score=score, options=Options)
