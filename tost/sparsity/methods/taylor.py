"""Taylor pruning (TP): keep the weights whose removal changes the loss of the trained network least.

First-order Taylor pruning (Molchanov et al., CVPR 2019) estimates the loss change of removing w as
|w ⊙ ∂L/∂w| on a *trained* network. Here that network is the `dense` stage's (`dense.epochs` of dense
training); the score is |w ⊙ Σ_b ∇_w L_b| over `prune.batches` training batches, the mask is trained
from the initialisation. At `dense.epochs: 0` the scored network is the init and TP is SNIP exactly.

Differences from upstream: the original scorer library's `Taylor1ScorerAbs` (ToST, Jaiswal et al.,
ICML 2022, Table 1) scored the initialisation, which made its TP masks SNIP's; gradients are zeroed
first (upstream lets stale `.grad` leak in) and the batch count is a parameter.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tost.errors import MaskError
from tost.sparsity.methods.base import Batch, PruneContext, Scored
from tost.sparsity.schedule import Scores


def summed_gradients(net: nn.Module, weights: Mapping[str, Tensor], batches: Iterable[Batch]) -> Scores:
    """Σ_b ∇_w L_b (mean cross-entropy per batch), in train mode as upstream, from zeroed gradients."""
    net.train()
    net.zero_grad(set_to_none=True)
    seen = 0
    for x, y in batches:
        F.cross_entropy(net(x), y).backward()  # gradients add up across batches on purpose
        seen += 1
    if not seen:
        raise MaskError("the pruning data loader gave no batches; check prune.batches and prune.batch_size")
    return {
        n: w.grad.detach().clone() if w.grad is not None else torch.zeros_like(w) for n, w in weights.items()
    }


def score(ctx: PruneContext, net: nn.Module, opts: Any) -> Scores:
    """|w ⊙ g|: the first-order estimate of the loss change when w is set to 0."""
    weights = ctx.weights(net)
    grads = summed_gradients(net, weights, ctx.batches())
    return {n: (w.detach() * grads[n]).abs() for n, w in weights.items()}


METHOD = Scored(score=score, network="trained")
