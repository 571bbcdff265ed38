"""Random pruning (RP): a uniformly random set of weights survives.

Scores are i.i.d. uniform draws from the context's seeded generator, on the CPU so the mask is the
same on every device. Under global scope each layer ends near the global sparsity; under layerwise
scope exactly at it.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from tost.sparsity.methods.base import PruneContext, Scored
from tost.sparsity.schedule import Scores


def score(ctx: PruneContext, net: nn.Module, opts: Any) -> Scores:
    """Uniform random scores, drawn in parameter order from the seeded CPU generator."""
    return {n: torch.rand(w.shape, generator=ctx.generator) for n, w in ctx.weights(net).items()}


METHOD = Scored(score=score)
