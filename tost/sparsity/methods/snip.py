"""SNIP (Lee et al., ICLR 2019): keep the connections the loss is most sensitive to, before training.

∂L/∂m at m = 1, for a multiplicative mask m on w, equals w ⊙ ∂L/∂w; so the score is |g ⊙ w| with
g = Σ_b ∇_w L_b over `prune.batches` batches, divided by the sum of all scores, as the original scorer
library (ToST, Jaiswal et al., ICML 2022) does. The normalisation does not change the ranking: SNIP and
`taylor` keep the same weights (upstream too); both are offered because the paper lists both.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from tost.sparsity.methods.base import PruneContext, Scored
from tost.sparsity.methods.taylor import summed_gradients
from tost.sparsity.schedule import Scores


def score(ctx: PruneContext, net: nn.Module, opts: Any) -> Scores:
    """|g ⊙ w| / Σ|g ⊙ w| (global L1 normalisation; an all-zero score is left as is)."""
    weights = ctx.weights(net)
    grads = summed_gradients(net, weights, ctx.batches())
    raw = {n: (grads[n] * w.detach()).abs() for n, w in weights.items()}
    total = float(sum(s.sum() for s in raw.values()))
    return {n: s / total for n, s in raw.items()} if total > 0 else raw


METHOD = Scored(score=score)
