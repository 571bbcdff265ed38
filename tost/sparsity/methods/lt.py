"""Lottery tickets by iterative magnitude pruning (IMP; Frankle & Carbin 2019, with rewinding).

`prune.rounds` rounds of: train `dense.epochs` epochs under the current mask → prune by |w| so that
the sparsity after round r is 1 - (1-s)^(r/R) (nested, exact; global or layerwise) → rewind the
surviving weights. Round 1 is the dense training, which is the `dense` stage's network itself unless
the rewind point lies inside it: rewinding goes to the initialisation (`prune.lt.rewind_epoch: 0`)
or to the weights after K epochs of the first, dense training, which round 1 then trains again to
take that snapshot. Those weights are returned as `Pruned.rewind`, which the mask stage saves as
init.pt so that the sparse training starts from them too. ToST (Jaiswal et al., ICML 2022) evaluates
such tickets as one of its masks.

Differences from the original LTH script: SGD and the train stage's loop instead of Adam; a
geometric per-round rate that ends exactly at `prune.sparsity` instead of a fixed 20 % (or 10 %) of
what remains; BatchNorm γ and biases are never pruned; no gradient "freezing" (the script's
`w < 1e-6` test also froze every negative weight). Every round trains the full `dense.epochs`, also
after a rewind to epoch K (open_lth would train the remaining epochs only).

With `ctx.resume` (the mask stage's `--resume` folder), every finished round is saved there, and
each round's training resumes after its last finished epoch: a killed run repeats neither.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from typing import Any

from torch import Tensor

from tost.sparsity.mask import Mask
from tost.sparsity.methods.base import Finder, PruneContext, Pruned
from tost.sparsity.methods.magnitude import magnitudes
from tost.sparsity.schedule import round_sparsities, select

log = logging.getLogger(__name__)
ROUNDS = "lt-rounds"  # the resume file of the finished rounds (mask, rewind weights, history)


@dataclass(frozen=True)
class Options:
    """The epoch of the first (dense) training to rewind to; 0 is the initialisation."""

    rewind_epoch: int

    def __post_init__(self) -> None:
        if self.rewind_epoch < 0:
            raise ValueError(f"rewind_epoch must be >= 0, got {self.rewind_epoch}")


def _state(model: Any) -> dict[str, Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def find_mask(ctx: PruneContext, opts: Options) -> Pruned:
    """Train, prune, rewind for `prune.rounds` rounds; rounds nest and end at `prune.sparsity`.

    `rewind_epoch` ≤ `dense.epochs` is checked by the config.
    """

    def snapshot(trainer: Any) -> None:  # kept in trainer.extra, so it survives a resume of round 1
        if trainer.epoch == opts.rewind_epoch:
            trainer.extra["rewind"] = _state(trainer.model)

    mask = Mask.ones(ctx.weights())
    rewind: dict[str, Tensor] | None = None
    history: list[dict[str, Any]] = []
    done = ctx.resume.load(ROUNDS) if ctx.resume is not None else None
    if done is not None:  # a killed run: its finished rounds are not trained again
        mask, rewind, history = Mask(done["mask"]), done["rewind"], list(done["history"])
        log.info("lt: rounds 1-%d of %d already done (%s)", done["round"], ctx.rounds, ctx.resume.root)
    for r, s in enumerate(round_sparsities(ctx.sparsity, ctx.rounds)):
        if r < len(history):
            continue
        row: dict[str, Any] = {"round": r + 1, "sparsity": mask.stats().sparsity}
        if r == 0 and opts.rewind_epoch == 0:  # the dense stage trained exactly this network already
            trained, row["network"] = ctx.trained, "dense stage"
        else:
            net = copy.deepcopy(ctx.model)
            if rewind is not None:
                net.load_state_dict(rewind)
            hook = snapshot if r == 0 else None
            result = ctx.train(net, mask, ctx.dense_epochs, f"lt[round {r + 1}/{ctx.rounds}]", hook)
            trained = result.model
            row.update(
                round_test_acc=result.summary["test_acc"],
                round_final_test_acc=result.summary["final_test_acc"],
            )
            if r == 0:
                rewind = result.extra.get("rewind")
        history.append(row)
        mask = select(magnitudes(ctx, trained), s, ctx.scope, previous=mask)
        if ctx.resume is not None:
            ctx.resume.save(
                ROUNDS, {"round": r + 1, "mask": mask.tensors, "rewind": rewind, "history": history}
            )
    # lt_rounds: the sparsity each round trained at, and its test accuracy (round 1: see dense.json)
    return Pruned(mask, {"lt_rounds": history}, rewind=rewind)


METHOD = Finder(find=find_mask, options=Options)
