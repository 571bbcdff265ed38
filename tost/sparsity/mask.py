"""The one mask representation: parameter name → bool tensor, True where the weight is kept.

Only Conv2d and Linear weights are prunable (biases and BatchNorm never are). The first conv and
the last Linear can be left dense by policy (`prune.include_first`, `prune.include_last`); the
default prunes every conv and keeps the classifier dense, as the original training scripts did.
A mask is enforced by multiplying the weights after every optimizer step (one fused
`torch._foreach_mul_`), never by re-masking in the forward pass, and it is checked against the
model by name and shape before use.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from tost.errors import MaskError
from tost.io import load_tensors, save_tensors

FORMAT = "tost-mask/1"


def prunable(model: nn.Module, include_first: bool = True, include_last: bool = False) -> dict[str, Tensor]:
    """Conv2d and Linear weights by parameter name, in module order, under the first/last policy."""
    found = [
        (f"{name}.weight" if name else "weight", m.weight)
        for name, m in model.named_modules()
        if isinstance(m, nn.Conv2d | nn.Linear)
    ]
    if not found:
        return {}
    last_linear = max((i for i, (_, w) in enumerate(found) if w.dim() == 2), default=None)
    keep = []
    for i, item in enumerate(found):
        if i == 0 and not include_first:
            continue
        if i == last_linear and not include_last and len(found) > 1:
            continue
        keep.append(item)
    return dict(keep)


@dataclass(frozen=True)
class MaskStats:
    """Counts of a mask (or of the zeros of a network's weights): global and per layer."""

    total: int
    kept: int
    per_layer: dict[str, float]

    @property
    def sparsity(self) -> float:
        return 1.0 - self.kept / self.total if self.total else 0.0


class Mask:
    """A binary mask over named weights; immutable once made (methods build new ones)."""

    def __init__(self, tensors: Mapping[str, Tensor]) -> None:
        for name, t in tensors.items():
            if not isinstance(t, Tensor):
                raise MaskError(f"mask entry {name!r} is not a tensor")
            if t.dtype != torch.bool:
                raise MaskError(f"mask entry {name!r} has dtype {t.dtype}; a mask must be bool (0/1)")
        self.tensors: dict[str, Tensor] = {k: v.detach().to("cpu") for k, v in tensors.items()}

    @classmethod
    def from_binary(cls, tensors: Mapping[str, Tensor], source: str = "mask") -> Mask:
        """Accept 0/1 tensors of any dtype (other tools save float masks); refuse anything else."""
        out = {}
        for name, t in tensors.items():
            if not isinstance(t, Tensor):
                raise MaskError(f"{source}: entry {name!r} is not a tensor")
            if t.dtype != torch.bool:
                bad = ~((t == 0) | (t == 1))
                if bool(bad.any()):
                    raise MaskError(
                        f"{source}: entry {name!r} has {int(bad.sum())} values that are neither 0 nor 1"
                    )
            out[name] = t != 0
        return cls(out)

    @classmethod
    def ones(cls, weights: Mapping[str, Tensor]) -> Mask:
        """The dense mask over `weights` (sparsity 0)."""
        return cls({n: torch.ones_like(w, dtype=torch.bool, device="cpu") for n, w in weights.items()})

    def check(self, weights: Mapping[str, Tensor], source: str = "mask") -> None:
        """Names and shapes must match the model's prunable weights exactly, in both directions."""
        missing = [n for n in weights if n not in self.tensors]
        extra = [n for n in self.tensors if n not in weights]
        if missing or extra:
            parts = []
            if missing:
                parts.append(
                    f"missing {len(missing)} entr{'y' if len(missing) == 1 else 'ies'} ({missing[0]}, ...)"
                )
            if extra:
                parts.append(
                    f"{len(extra)} unknown entr{'y' if len(extra) == 1 else 'ies'} ({extra[0]}, ...)"
                )
            raise MaskError(
                f"{source} does not fit the model: {'; '.join(parts)}; was it made for another "
                "architecture or another prune.include_first/include_last policy?"
            )
        for name, w in weights.items():
            if tuple(self.tensors[name].shape) != tuple(w.shape):
                raise MaskError(
                    f"{source}: entry {name!r} has shape {tuple(self.tensors[name].shape)}, "
                    f"the model's weight has {tuple(w.shape)}; was it made for another architecture or width?"
                )

    def stats(self) -> MaskStats:
        per_layer = {n: 1.0 - int(t.sum()) / t.numel() for n, t in self.tensors.items()}
        return MaskStats(
            total=sum(t.numel() for t in self.tensors.values()),
            kept=sum(int(t.sum()) for t in self.tensors.values()),
            per_layer=per_layer,
        )

    @torch.no_grad()
    def apply_(self, weights: Mapping[str, Tensor]) -> None:
        """Zero the pruned weights in place."""
        for name, m in self.tensors.items():
            w = weights[name]
            w.mul_(m.to(device=w.device, dtype=w.dtype))

    def violations(self, weights: Mapping[str, Tensor]) -> dict[str, int]:
        """Pruned positions that hold a non-zero value, per layer; empty when the mask holds."""
        out = {}
        for name, m in self.tensors.items():
            n = int((weights[name].detach().to("cpu")[~m] != 0).sum())
            if n:
                out[name] = n
        return out

    def is_subset_of(self, other: Mask) -> bool:
        """Every weight kept here is kept in `other`: iterative rounds must nest."""
        return all(bool((t & ~other.tensors[n]).sum() == 0) for n, t in self.tensors.items())

    def save(self, path: str | os.PathLike[str], meta: Mapping[str, Any] | None = None) -> None:
        save_tensors(path, {"format": FORMAT, "masks": self.tensors, "meta": dict(meta or {})})

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> tuple[Mask, dict[str, Any]]:
        """Load a mask saved by `save`; anything else is refused with a clear error."""
        obj = load_tensors(path)
        if not isinstance(obj, dict) or obj.get("format") != FORMAT:
            raise MaskError(f"{path}: not a tost mask file (expected format {FORMAT})")
        return cls.from_binary(obj["masks"], str(path)), dict(obj.get("meta", {}))


def measured_stats(weights: Mapping[str, Tensor]) -> MaskStats:
    """Sparsity of the weights themselves (exact zeros), independent of any mask."""
    nz = {n: int((w.detach() != 0).sum()) for n, w in weights.items()}
    return MaskStats(
        total=sum(w.numel() for w in weights.values()),
        kept=sum(nz.values()),
        per_layer={n: 1.0 - nz[n] / w.numel() for n, w in weights.items()},
    )


class Enforcer:
    """Keeps pruned weights at exactly 0 with one fused multiply per optimizer step.

    The float masks are made once, on the weights' device and dtype, so the per-step cost is a single
    `_foreach_mul_` launch over all pruned tensors and no host synchronisation.
    """

    def __init__(self, mask: Mask, weights: Mapping[str, Tensor]) -> None:
        self.names = list(mask.tensors)
        self.params = [weights[n] for n in mask.tensors]
        self.masks = [
            m.to(device=w.device, dtype=w.dtype).contiguous(memory_format=_format_of(w))
            for m, w in zip(mask.tensors.values(), self.params, strict=True)
        ]

    def covers(self, mask: Mask) -> bool:
        """Whether `mask` has exactly this enforcer's layers, so `update` can take its values."""
        return list(mask.tensors) == self.names and all(
            t.shape == m.shape for t, m in zip(mask.tensors.values(), self.masks, strict=True)
        )

    @torch.no_grad()
    def update(self, mask: Mask) -> None:
        """New mask values copied into the same tensors, so a captured step enforces them as it is.

        Gradual pruning (gmp) changes the mask every epoch of its ramp; a new enforcer would mean
        capturing the training step again each time.
        """
        for m, t in zip(self.masks, mask.tensors.values(), strict=True):
            m.copy_(t)

    @torch.no_grad()
    def __call__(self) -> None:
        if self.params:
            torch._foreach_mul_(self.params, self.masks)


def _format_of(t: Tensor) -> torch.memory_format:
    if t.dim() == 4 and t.is_contiguous(memory_format=torch.channels_last) and not t.is_contiguous():
        return torch.channels_last
    return torch.contiguous_format
