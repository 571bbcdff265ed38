"""The hooks a trick offers the one training loop; each does nothing unless a trick overrides it.

Order of calls: `prepare` once before training (may change the model: add ghost modules, swap
activations, rescale weights), `on_epoch_start` at every epoch (schedules), `loss` at every step
(None lets the trainer use plain cross-entropy), `finish` once at the end, which must leave the plain
architecture behind (no ghosts) with the mask untouched.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from torch import Tensor, nn

from tost.sparsity.mask import Mask

BatchFn = Callable[[], Iterator[tuple[Tensor, Tensor]]]


class Trick:
    """A training-time intervention; subclasses override only the hooks they need."""

    name = "trick"

    def prepare(self, model: nn.Module, mask: Mask, batches: BatchFn) -> nn.Module:
        return model

    def on_epoch_start(self, epoch: int, epochs: int, model: nn.Module) -> None:
        return None

    def loss(self, logits: Tensor, target: Tensor, epoch: int, epochs: int) -> Tensor | None:
        return None

    def finish(self, model: nn.Module) -> nn.Module:
        return model

    def state(self) -> dict[str, Any]:
        """What resuming needs beyond the model (schedules are functions of the epoch, so usually nothing)."""
        return {}

    def metrics(self) -> dict[str, Any]:
        """Numbers worth recording in the train metrics (e.g. learned scales)."""
        return {}
