"""One-shot magnitude pruning (OMP): train dense, keep the largest |w|, restart from the initialisation.

ToST (Jaiswal et al., ICML 2022) trains its OMP masks from the original init; the original code
(`cifar_prune.py`) trains the dense network, keeps |w| above a global threshold over every conv, and
its training scripts restart from the init. The mask stage saves that init as init.pt, so the
rewind is implicit here: this module only returns the mask.

Differences from upstream: exactly round(s·N) weights are pruned (upstream prunes ties at the
threshold, one weight more), scope may be layerwise, and the classifier follows `prune.include_last`.
`prune.rounds > 1` prunes the same trained network in nested steps, which gives the same mask as one
shot (the top-k of a top-k by one score); pruning with retraining between rounds is `lt`.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from torch import nn

from tost.sparsity.mask import Mask
from tost.sparsity.methods.base import Finder, PruneContext, Pruned
from tost.sparsity.schedule import Scores, round_sparsities, select


def magnitudes(ctx: PruneContext, net: nn.Module) -> Scores:
    """|w| of the prunable weights: the score of OMP, GMP and lottery tickets."""
    return {n: w.detach().abs() for n, w in ctx.weights(net).items()}


def train_dense(ctx: PruneContext, name: str, on_epoch_end: Callable[[Any], None] | None = None) -> Any:
    """Train a copy of the init without a mask for `pretrain_epochs` (ctx.model stays untouched)."""
    net = copy.deepcopy(ctx.model)
    return ctx.train(net, Mask.ones(ctx.weights(net)), ctx.pretrain_epochs, name, on_epoch_end)


def accuracy(summary: dict[str, Any], prefix: str) -> dict[str, float]:
    """Test accuracy at the best-validation epoch and at the last epoch, for metrics/mask.json."""
    return {f"{prefix}_test_acc": summary["test_acc"], f"{prefix}_final_test_acc": summary["final_test_acc"]}


def find_mask(ctx: PruneContext, opts: Any) -> Pruned:
    """Train dense once, then keep the largest |w| of the trained weights (nested per round)."""
    result = train_dense(ctx, "magnitude[dense]")
    scores = magnitudes(ctx, result.model)
    mask: Mask | None = None
    for s in round_sparsities(ctx.sparsity, ctx.rounds):
        mask = select(scores, s, ctx.scope, previous=mask)
    assert mask is not None
    return Pruned(mask, accuracy(result.summary, "dense"))


METHOD = Finder(find=find_mask)
