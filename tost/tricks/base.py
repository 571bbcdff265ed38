"""The hooks a trick offers the one training loop.

Order of calls: `prepare` once before training (may change the model: add ghost modules, swap
activations, rescale weights), `on_epoch_start` at every epoch (schedules: values that change per
epoch are written into tensors the step reads, so a captured step needs no recapture), `loss` at
every step (only a trick that overrides it defines the training loss; a variant may hold at most one
such trick), `finish` once at the end, which leaves the plain architecture behind (no ghosts) with
the mask untouched, unless the trick is still on in the last epoch (a window ending at 1, as the
original code ran): then what it added stays in the network the accuracies were measured on, and
`kept()` describes it so that `restore` rebuilds that network from a checkpoint.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn

from tost.sparsity.mask import Mask

BatchFn = Callable[[], Iterator[tuple[Tensor, Tensor]]]


class Trick:
    """A training-time intervention; subclasses override only the hooks they need."""

    def prepare(self, model: nn.Module, mask: Mask, batches: BatchFn) -> nn.Module:
        return model

    def on_epoch_start(self, epoch: int, epochs: int, model: nn.Module) -> None:
        return None

    def loss(self, logits: Tensor, target: Tensor) -> Tensor:
        raise NotImplementedError  # only tricks with `overrides_loss` define it

    def finish(self, model: nn.Module) -> nn.Module:
        return model

    def metrics(self) -> dict[str, Any]:
        """Numbers worth recording in the train metrics (e.g. learned scales)."""
        return {}

    def kept(self) -> dict[str, Any]:
        """What `finish` left in the network (empty: nothing, the plain architecture)."""
        return {}

    def graph_key(self) -> object:
        """Changes exactly when the computation's structure does (a captured step is then redone)."""
        return None

    @property
    def overrides_loss(self) -> bool:
        """Whether this trick defines the training loss (it overrides `loss`)."""
        return type(self).loss is not Trick.loss


@dataclass(frozen=True)
class TrickEntry:
    """A registry entry, shaped as the mask methods' are: the options dataclass and a factory.

    `restore(model, kept)` puts back what a trick left in a trained network (its `kept()`), so that a
    checkpoint of such a network loads; None for tricks that never leave anything.
    """

    options: type | None
    make: Callable[[Any], Trick]
    restore: Callable[[nn.Module, dict[str, Any]], nn.Module] | None = None
