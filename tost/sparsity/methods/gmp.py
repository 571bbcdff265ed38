"""Gradual magnitude pruning (GMP, Zhu & Gupta 2017) during dense training; the mask restarts from init.

ToST lists GMP among its masks but the original code has no implementation, so this follows Zhu &
Gupta's cubic schedule s_t = s_f + (s_i - s_f)(1 - (t - t0)/(t1 - t0))^3 with s_i = 0, applied at
the end of every epoch t of its own dense run of `dense.epochs` epochs from t0 = start·E to t1 = end·E
(`prune.gmp`). Each step prunes by |w| under the previous mask (masks nest) through
`Trainer.set_mask`, so pruned weights stay exactly 0 for the rest of the run. The last epoch always
lies at or after t1, so the final mask has exactly `prune.sparsity`. As for OMP, the train stage
trains this mask from the original init. GMP's schedule is its own iteration: `prune.rounds` is ignored.
It cannot share the `dense` stage's network, because it prunes while that network trains.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from tost.schedules import Window
from tost.sparsity.mask import Mask
from tost.sparsity.methods.base import Finder, PruneContext, Pruned
from tost.sparsity.methods.magnitude import magnitudes
from tost.sparsity.schedule import select


@dataclass(frozen=True)
class Options:
    """When the cubic ramp starts and ends, as fractions of `dense.epochs`."""

    start: float
    end: float

    def __post_init__(self) -> None:
        Window(self.start, self.end)  # validates the window


def cubic_sparsity(t: float, t0: float, t1: float, final: float, initial: float = 0.0) -> float:
    """Zhu & Gupta's sparsity at step t: `initial` until t0, cubic ramp, exactly `final` from t1 on."""
    progress = float(t >= t0) if t1 <= t0 else min(max((t - t0) / (t1 - t0), 0.0), 1.0)
    return final + (initial - final) * (1.0 - progress) ** 3


def find_mask(ctx: PruneContext, opts: Options) -> Pruned:
    """Train dense, pruning by |w| at the end of each epoch of the ramp; the last mask is the result."""
    epochs = ctx.dense_epochs
    t0, t1 = opts.start * epochs, opts.end * epochs

    # All state lives in the trainer (its mask, `extra`), so that it is in the per-epoch resume file
    # and a killed run continues with the mask and schedule it had reached.
    def prune(trainer: Any) -> None:  # runs after every epoch; trainer.epoch counts finished epochs
        if trainer.epoch < t0:
            return
        s = cubic_sparsity(trainer.epoch, t0, t1, ctx.sparsity)
        mask = select(magnitudes(ctx, trainer.model), s, ctx.scope, previous=trainer.mask)
        trainer.set_mask(mask)
        trainer.extra["schedule"] = [*trainer.extra.get("schedule", []), mask.stats().sparsity]

    net = copy.deepcopy(ctx.model)
    result = ctx.train(net, Mask.ones(ctx.weights(net)), epochs, "gmp", prune)
    # the accuracy of the gradually pruned network, before the rewind to the init
    info = {
        "gmp_test_acc": result.summary["test_acc"],
        "gmp_final_test_acc": result.summary["final_test_acc"],
    }
    info["gmp_sparsity_per_epoch"] = list(result.extra.get("schedule", []))
    return Pruned(result.mask, info)


METHOD = Finder(find=find_mask, options=Options)
