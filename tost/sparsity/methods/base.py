"""What every pruning method gets (`PruneContext`) and the shared machinery of score-only methods.

A score-only method (`Scored`) supplies one function, scores = f(ctx, net, opts), and says which
network it scores: the initialisation (SNIP, GraSP, random) or the dense network after `dense.epochs`
of training (magnitude, Taylor). `Scored.find_mask` does the rest, identically for every method: the
rounds of the geometric schedule, each round scoring that network with the previous mask applied,
global or layerwise exact top-k selection, and nesting. Methods with their own schedule (gmp and lt
train; synflow iterates; file reads a file) are a `Finder`: one `find(ctx, opts) -> Pruned` function.
Every mask is trained from the initialisation (or lt's rewind point), whichever network it scored.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol

import torch
from torch import Tensor, nn

from tost.sparsity.mask import Mask, prunable
from tost.sparsity.schedule import Scores, round_sparsities, select

if TYPE_CHECKING:  # config imports the method registry for its names and options
    from tost.config import PruneConfig
    from tost.resume import ResumeDir

log = logging.getLogger(__name__)

Batch = tuple[Tensor, Tensor]


PROGRESS_EVERY = 5.0  # seconds between a long mask search's progress lines


class Progress:
    """Lines of a long loop (GraSP's batches, SynFlow's iterations): where it is, elapsed, ETA.

    At most one every `PROGRESS_EVERY` seconds, and one at the end, so a quick search prints one line
    and a minute-long one says that it is moving.
    """

    def __init__(self, name: str, total: int, clock: Callable[[], float] = time.perf_counter) -> None:
        self.name, self.total, self.clock = name, total, clock
        self.start = self.last = clock()

    def step(self, done: int, what: str = "") -> None:
        now = self.clock()
        if done < self.total and now - self.last < PROGRESS_EVERY:
            return
        self.last, elapsed = now, now - self.start
        eta = elapsed / max(done, 1) * (self.total - done)
        log.info("%s: %d/%d%s, %.0fs, ETA %.0fs", self.name, done, self.total, f" {what}" if what else "",
                 elapsed, eta)  # fmt: skip


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


@dataclass(frozen=True)
class PruneContext:
    """Everything a method may read; methods return what they produce (`Pruned`) and change nothing here.

    `model` holds the initial weights and `trained` the dense network after `dense_epochs` of
    training (the init itself at 0); methods never modify either (they work on copies). `batches()`
    yields normalised training batches on the device; `generator` is the only source of randomness a
    method may use, so masks are reproducible.
    """

    prune: PruneConfig
    model: nn.Module
    trained: nn.Module
    batches: Callable[[], Iterator[Batch]]
    generator: torch.Generator
    train: TrainFn
    dense_epochs: int
    input_shape: tuple[int, int, int]  # (C, H, W) of an image: data-free methods (synflow) need it
    # Where a method that runs in rounds (lt) keeps its finished rounds, so that a killed mask stage
    # does not redo them; None: no resume. Training itself resumes through `train` (per run name).
    resume: ResumeDir | None = None

    @property
    def sparsity(self) -> float:
        return self.prune.sparsity

    @property
    def rounds(self) -> int:
        return self.prune.rounds

    @property
    def scope(self) -> str:
        return self.prune.scope

    def weights(self, model: nn.Module | None = None) -> dict[str, Tensor]:
        """The prunable weights of `model` (default: the context's model) under the layer policy."""
        net = model if model is not None else self.model
        return prunable(net, self.prune.include_first, self.prune.include_last)


@dataclass(frozen=True)
class Pruned:
    """What a method found: the mask, extra metrics for mask.json, and where training starts.

    `rewind` is None for every method but `lt` with `rewind_epoch > 0`, whose sparse training
    starts from the weights of that epoch of the dense run instead of the initialisation.
    """

    mask: Mask
    info: dict[str, Any] = field(default_factory=dict)
    rewind: dict[str, Tensor] | None = None


class Method(Protocol):
    """What the registry holds: a mask finder and the dataclass of its options (or None)."""

    options: type | None

    def find_mask(self, ctx: PruneContext, opts: Any) -> Pruned: ...


ScoreFn = Callable[[PruneContext, nn.Module, Any], Scores]


@dataclass(frozen=True)
class Scored:
    """A method defined by a score (higher = keep) of the init or of the trained dense network."""

    score: ScoreFn
    options: type | None = None
    network: Literal["init", "trained"] = "init"

    def find_mask(self, ctx: PruneContext, opts: Any) -> Pruned:
        """`ctx.rounds` nested rounds, each scoring a copy of the network with the last mask applied."""
        mask: Mask | None = None
        scored = ctx.trained if self.network == "trained" else ctx.model
        for r, s in enumerate(round_sparsities(ctx.sparsity, ctx.rounds)):
            net = copy.deepcopy(scored)
            if mask is not None:
                mask.apply_(ctx.weights(net))
            scores = self.score(ctx, net, opts)
            mask = select(scores, s, ctx.scope, previous=mask)
            log.info("prune round %d/%d: sparsity %.4f", r + 1, ctx.rounds, mask.stats().sparsity)
        assert mask is not None  # rounds >= 1 is validated by the config
        return Pruned(mask)


@dataclass(frozen=True)
class Finder:
    """A method that runs its own schedule (it trains, or iterates its scores): one find function."""

    find: Callable[[PruneContext, Any], Pruned]
    options: type | None = None

    def find_mask(self, ctx: PruneContext, opts: Any) -> Pruned:
        return self.find(ctx, opts)
