"""One-shot magnitude pruning (OMP): keep the largest |w| of the trained dense network, train from the init.

ToST (Jaiswal et al., ICML 2022) trains its OMP masks from the original init; the original code
(`cifar_prune.py`) trains the dense network, keeps |w| above a global threshold over every conv, and
its training scripts restart from the init. Here the dense network is the `dense` stage's (trained
once for every method and sparsity that needs it) and the mask stage saves the init as init.pt, so
this module only scores.

Differences from upstream: exactly round(s·N) weights are pruned (upstream prunes ties at the
threshold, one weight more), scope may be layerwise, and the classifier follows `prune.include_last`.
`prune.rounds > 1` prunes the same trained network in nested steps, which gives the same mask as one
shot (the top-k of a top-k by one score); pruning with retraining between rounds is `lt`. At
`dense.epochs: 0` it prunes the initialisation by magnitude.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from tost.sparsity.methods.base import PruneContext, Scored
from tost.sparsity.schedule import Scores


def magnitudes(ctx: PruneContext, net: nn.Module, opts: Any = None) -> Scores:
    """|w| of the prunable weights: the score of OMP, GMP and lottery tickets."""
    return {n: w.detach().abs() for n, w in ctx.weights(net).items()}


METHOD = Scored(score=magnitudes, network="trained")
