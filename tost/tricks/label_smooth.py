"""Label smoothing for sparse training, decaying to plain cross-entropy.

ToST (Jaiswal et al., ICML 2022) softens the one-hot targets so that a sparse network, with
little capacity to spare, is not pushed to over-confident logits. The original code's convention:
the true class gets 1 - α and every other class α/(C - 1), which is PyTorch's
`label_smoothing=ε` with ε = α·C/(C - 1) (PyTorch also gives the true class a share of ε).

Deliberate differences from the original code (constant α = 0.1, also applied to the logged
validation and test losses): α decays linearly from `epsilon` at epoch 0 to 0 at `end` (a fraction
of the epochs; `end: 1.0` reaches 0 when training ends, and a value above 1 keeps it nearly
constant), and only the training loss is smoothed, so evaluation losses stay comparable across
variants.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor

from tost.errors import ConfigError
from tost.tricks.base import Trick, TrickEntry


@dataclass(frozen=True)
class Options:
    """`tricks.label_smooth`: α at the first epoch (the original's convention) and when it reaches 0."""

    epsilon: float
    end: float

    def __post_init__(self) -> None:
        if not 0.0 <= self.epsilon < 1.0:
            raise ValueError(f"epsilon must be in [0, 1), got {self.epsilon}")
        if self.end <= 0.0:
            raise ValueError(f"end must be > 0 (a fraction of the epochs), got {self.end}")


def alpha_at(epoch: int, epochs: int, epsilon: float, end: float) -> float:
    """α for the 0-based `epoch`: `epsilon` at the start, linear to 0 at the fraction `end`."""
    return epsilon * max(0.0, 1.0 - (epoch / epochs) / end)


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


class LabelSmooth(Trick):
    """Cross-entropy with the epoch's smoothing; the trainer uses it for the training loss only."""

    def __init__(self, options: Options) -> None:
        self.options = options

    def loss(self, logits: Tensor, target: Tensor, epoch: int, epochs: int) -> Tensor:
        alpha = alpha_at(epoch, epochs, self.options.epsilon, self.options.end)
        return F.cross_entropy(logits, target, label_smoothing=torch_epsilon(alpha, logits.shape[1]))


TRICK = TrickEntry(options=Options, make=LabelSmooth)
