"""Label smoothing for sparse training, decaying to plain cross-entropy.

ToST (Jaiswal et al., ICML 2022) softens the one-hot targets so that a sparse network, with
little capacity to spare, is not pushed to over-confident logits. The original code's convention:
the true class gets 1 - α and every other class α/(C - 1), which is PyTorch's
`label_smoothing=ε` with ε = α·C/(C - 1) (PyTorch also gives the true class a share of ε).

Deliberate differences from the original code (constant α = 0.1, also applied to the logged
validation and test losses): α = `epsilon` until `start` and decays linearly to 0 at `end`
(fractions of the epochs; `start: 0, end: 1` reaches 0 when training ends, `start: 1, end: 1` keeps it
constant as the original did), and only the training loss is smoothed, so evaluation losses stay
comparable across variants.

α lives in a device tensor set once per epoch, and the loss is PyTorch's own formula written out,
(1 - ε)·NLL + (ε/C)·mean(-Σ log p), so that a captured training step (tost.step) reads the epoch's α
without being captured again; on the CPU it equals `F.cross_entropy(label_smoothing=ε)` bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tost.errors import ConfigError
from tost.schedules import Window
from tost.sparsity.mask import Mask
from tost.tricks.base import BatchFn, Trick, TrickEntry


@dataclass(frozen=True)
class Options:
    """`tricks.label_smooth`: α in the original's convention, and the window it decays to 0 in."""

    epsilon: float
    start: float
    end: float

    def __post_init__(self) -> None:
        if not 0.0 <= self.epsilon < 1.0:
            raise ValueError(f"epsilon must be in [0, 1), got {self.epsilon}")
        Window(self.start, self.end)  # validates the window

    @property
    def window(self) -> Window:
        return Window(self.start, self.end)


def alpha_at(epoch: int, epochs: int, options: Options) -> float:
    """α for the 0-based `epoch`: `epsilon` until `start`, linear to 0 at `end`."""
    return options.epsilon * (1.0 - options.window.ramp(epoch, epochs))


def torch_epsilon(alpha: float, num_classes: int) -> float:
    """PyTorch's `label_smoothing` that puts α/(C - 1) on each wrong class, as the original did."""
    if num_classes < 2:
        return 0.0
    eps = alpha * num_classes / (num_classes - 1)
    if eps > 1.0:
        raise ConfigError(
            f"tricks.label_smooth.epsilon={alpha} is too large for {num_classes} classes "
            f"(at most {(num_classes - 1) / num_classes:.3f})"
        )
    return eps


def smoothed_cross_entropy(logits: Tensor, target: Tensor, alpha: Tensor) -> Tensor:
    """Cross-entropy with torch ε = α·C/(C - 1) for a 0-dim float64 α (a device tensor)."""
    c = logits.shape[1]
    eps = alpha * c / (c - 1) if c > 1 else alpha * 0.0
    log_p = F.log_softmax(logits, 1)
    nll, smooth = F.nll_loss(log_p, target), -log_p.sum(1).mean()
    return (1 - eps).to(logits.dtype) * nll + smooth * (eps / c).to(logits.dtype)


class LabelSmooth(Trick):
    """Cross-entropy with the epoch's smoothing; the trainer uses it for the training loss only."""

    def __init__(self, options: Options) -> None:
        self.options = options
        self.alpha = torch.zeros((), dtype=torch.float64)
        self._checked = False

    def prepare(self, model: nn.Module, mask: Mask, batches: BatchFn) -> nn.Module:
        self.alpha = self.alpha.to(next(model.parameters()).device)
        return model

    def on_epoch_start(self, epoch: int, epochs: int, model: nn.Module) -> None:
        self.alpha.fill_(alpha_at(epoch, epochs, self.options))

    def loss(self, logits: Tensor, target: Tensor) -> Tensor:
        if not self._checked:  # once, on the host: the first step is never a captured replay
            torch_epsilon(self.options.epsilon, logits.shape[1])
            self._checked = True
        return smoothed_cross_entropy(logits, target, self.alpha)


TRICK = TrickEntry(options=Options, make=LabelSmooth)
