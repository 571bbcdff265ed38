"""SNIP (Lee et al., ICLR 2019): keep the connections the loss is most sensitive to, before training.

∂L/∂m at m = 1, for a multiplicative mask m on w, equals w ⊙ ∂L/∂w; so the score is |g ⊙ w| with
g = Σ_b ∇_w L_b over `prune.batches` batches, on the initialisation. It is the Taylor score of the
untrained network, and computed by the same function (`taylor.score`): TP scores the trained one.

Difference from upstream: the original scorer library divides the scores by their sum, a positive
constant that leaves the ranking alone except where rounding makes two scores equal; we leave it out,
so that SNIP and TP at `dense.epochs: 0` are the same computation.
"""

from __future__ import annotations

from tost.sparsity.methods import taylor
from tost.sparsity.methods.base import Scored

METHOD = Scored(score=taylor.score)
