"""Scores → masks with exact counts, and how a target sparsity is spread over pruning rounds.

All functions here are pure (no model, no RNG), so the counting rules are tested on their own:
- the number pruned is round(sparsity × count), globally or per layer, so the measured sparsity is
  the requested one to within one weight (per layer for layerwise scope);
- ties are broken by position (a stable sort), so a mask is bit-identical across runs;
- weights pruned in an earlier round score -inf, so every round's mask is a subset of the last.

A layer may end with every weight pruned (layer collapse): `tost.sparsity.collapse` records it, and
`empty_layer_error` words the refusal for users who ask for the strict rule (`prune.empty_layers`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Literal

import torch
from torch import Tensor

from tost.errors import MaskError
from tost.sparsity.mask import Mask

Scores = dict[str, Tensor]


def round_sparsities(target: float, rounds: int) -> list[float]:
    """Geometric schedule: each round keeps the same fraction (1-s)^(1/rounds) of what remains."""
    return [1.0 - (1.0 - target) ** ((r + 1) / rounds) for r in range(rounds)]


def _keep_top(flat: Tensor, n_keep: int) -> Tensor:
    order = torch.argsort(flat, descending=True, stable=True)
    keep = torch.zeros(flat.numel(), dtype=torch.bool)
    keep[order[:n_keep]] = True
    return keep


def _prepared(scores: Mapping[str, Tensor], previous: Mask | None) -> dict[str, Tensor]:
    out = {}
    for name, s in scores.items():
        s = s.detach().to("cpu", torch.float64).reshape(-1).clone()
        if bool(torch.isnan(s).any()):
            raise MaskError(f"scores for {name} contain NaN; the pruning method diverged")
        if previous is not None:
            s[~previous.tensors[name].reshape(-1)] = -torch.inf
        out[name] = s
    return out


def select(
    scores: Mapping[str, Tensor],
    sparsity: float,
    scope: Literal["global", "layerwise"],
    previous: Mask | None = None,
) -> Mask:
    """Keep the highest scores so that round(sparsity × n) weights are pruned (globally or per layer)."""
    flat = _prepared(scores, previous)
    shapes = {n: s.shape for n, s in scores.items()}
    if scope == "layerwise":
        keep = {n: _keep_top(s, s.numel() - round(sparsity * s.numel())) for n, s in flat.items()}
    else:
        allscores = torch.cat(list(flat.values()))
        total = allscores.numel()
        kept = _keep_top(allscores, total - round(sparsity * total))
        keep, offset = {}, 0
        for n, s in flat.items():
            keep[n] = kept[offset : offset + s.numel()]
            offset += s.numel()
    return Mask({n: k.reshape(shapes[n]) for n, k in keep.items()})


def empty_layer_error(empty: list[str], sizes: Mapping[str, int], sparsity: float, scope: str) -> MaskError:
    """The strict rule: no layer may lose every weight (its output would be constant); name it and the fix.

    Layerwise, a layer of n weights keeps n - round(s·n), at least one while s < (n - 1/2)/n, so the
    smallest layer sets the limit; globally the scores decide, and layerwise scope is offered as the
    fix only when it would keep every layer alive.
    """
    n = min(sizes.values())
    limit = math.floor((n - 0.5) / n * 1e4) / 1e4  # rounded down, so that "below" it is safe
    if scope == "layerwise":
        fix = f"lower prune.sparsity below {limit:.4f} (the smallest layer has {n} weights)"
    else:
        fix = "lower prune.sparsity" + (" or use prune.scope=layerwise" if sparsity < limit else "")
    more = f" and {len(empty) - 1} other layer(s)" if len(empty) > 1 else ""
    return MaskError(
        f"sparsity {sparsity:.4f} ({scope}) would leave layer {empty[0]} ({sizes[empty[0]]} weights){more} "
        f"with no weight; {fix} (or set prune.empty_layers=keep to train it anyway)"
    )
