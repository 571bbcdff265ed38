"""What every pruning method gets (`PruneContext`) and the shared machinery of score-only methods.

A score-only method (`Scored`) supplies one function, scores = f(ctx, opts); `Scored.find_mask`
does the rest, identically for every method: the rounds of the geometric schedule, each round
scoring the network with the previous mask applied, global or layerwise exact top-k selection, and
nesting. Methods with their own schedule (magnitude, gmp, lt train; synflow iterates; file reads a
file) are a `Finder`: one `find(ctx, opts) -> Mask` function.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import Tensor, nn

from tost.resume import ResumeDir
from tost.sparsity.mask import Mask, prunable
from tost.sparsity.schedule import Scores, round_sparsities, select

log = logging.getLogger(__name__)

Batch = tuple[Tensor, Tensor]


class TrainFn(Protocol):
    """Train `model` under `mask` for `epochs` with the train stage's own loop and settings.

    Returns the loop's `FitResult` (trained model, per-epoch history, summary with accuracies);
    `on_epoch_end(trainer)` may snapshot weights or call `trainer.set_mask` (gradual pruning).
    """

    def __call__(
        self,
        model: nn.Module,
        mask: Mask,
        epochs: int,
        name: str,
        on_epoch_end: Callable[[Any], None] | None = None,
    ) -> Any: ...


@dataclass
class PruneContext:
    """The dense initialisation and everything a method may use to score it.

    `model` holds the initial weights and is never modified by a method (they work on copies);
    `batches()` yields normalised training batches on the device; `generator` is the only source of
    randomness a method may use, so masks are reproducible.
    """

    model: nn.Module
    sparsity: float
    rounds: int
    scope: str
    include_first: bool
    include_last: bool
    batches: Callable[[], Iterator[Batch]]
    generator: torch.Generator
    device: torch.device
    train: TrainFn
    pretrain_epochs: int
    info: dict[str, Any] = field(default_factory=dict)  # extra metrics a method reports (mask.json)
    input_shape: tuple[int, int, int] | None = None  # (C, H, W) of an image: data-free methods (synflow)
    path: str = ""  # prune.path: the file that `file` imports
    # Set by a method that rewinds to trained weights (lt with rewind_epoch > 0): the mask stage saves
    # this state dict as init.pt instead of the initialisation, so sparse training starts from it.
    rewind_state: dict[str, Tensor] | None = None
    # Where a method that runs in rounds (lt) keeps its finished rounds, so that a killed mask stage
    # does not redo them; None: no resume. Training itself resumes through `train` (per run name).
    resume: ResumeDir | None = None

    def weights(self, model: nn.Module | None = None) -> dict[str, Tensor]:
        """The prunable weights of `model` (default: the context's model) under the layer policy."""
        return prunable(model if model is not None else self.model, self.include_first, self.include_last)


class Method(Protocol):
    """What the registry holds: a mask finder and the dataclass of its options (or None)."""

    options: type | None

    def find_mask(self, ctx: PruneContext, opts: Any) -> Mask: ...


ScoreFn = Callable[[PruneContext, nn.Module, Any], Scores]


@dataclass(frozen=True)
class Scored:
    """A method defined by a score (higher = keep), run for `ctx.rounds` nested rounds."""

    score: ScoreFn
    options: type | None = None

    def find_mask(self, ctx: PruneContext, opts: Any) -> Mask:
        mask: Mask | None = None
        for r, s in enumerate(round_sparsities(ctx.sparsity, ctx.rounds)):
            net = copy.deepcopy(ctx.model)
            if mask is not None:
                mask.apply_(ctx.weights(net))
            scores = self.score(ctx, net, opts)
            mask = select(scores, s, ctx.scope, previous=mask)
            log.info("prune round %d/%d: sparsity %.4f", r + 1, ctx.rounds, mask.stats().sparsity)
        assert mask is not None  # rounds >= 1 is validated by the config
        return mask


@dataclass(frozen=True)
class Finder:
    """A method that runs its own schedule (it trains, or iterates its scores): one find function."""

    find: Callable[[PruneContext, Any], Mask]
    options: type | None = None

    def find_mask(self, ctx: PruneContext, opts: Any) -> Mask:
        return self.find(ctx, opts)
