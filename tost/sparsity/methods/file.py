"""Bring your own mask (`prune.path`): ToST's tricks apply to any mask (Jaiswal et al., ICML 2022).

Accepted files, all read with `weights_only=True`:
- a tost mask (`Mask.save`);
- a plain {parameter name: 0/1 tensor} dict; names with a `_mask` suffix, as the original code's
  pruner writes (`conv1.weight_mask`), are read as the weight they mask, other entries of such a
  file (e.g. `weight_orig`) are ignored;
- a pruned checkpoint: a state dict, {'state_dict': ...} (the original's `pruned.pth.tar`) or a
  tost checkpoint; the mask is `weight != 0`. A plain dict counts as a state dict when it holds
  anything but `.weight` entries (biases, BatchNorm).
Names and shapes are checked before values (so another architecture is reported as such), then
binariness. `prune.sparsity` is ignored: the mask is what the file says; mask.json records it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from tost.errors import MaskError
from tost.io import load_tensors
from tost.sparsity.mask import FORMAT, Mask, prunable
from tost.sparsity.methods.base import Finder, PruneContext, Pruned


def _checked(entries: Mapping[str, Any], expected: Mapping[str, Tensor], source: str) -> None:
    """Names and shapes against `expected`, as one MaskError; values are checked later."""
    bad = next((k for k, v in entries.items() if not isinstance(v, Tensor)), None)
    if bad is not None:
        raise MaskError(f"{source}: entry {bad!r} is not a tensor")
    Mask({k: torch.zeros(v.shape, dtype=torch.bool) for k, v in entries.items()}).check(expected, source)


def _from_state_dict(state: Mapping[str, Any], ctx: PruneContext, source: str) -> Mask:
    """Pruned where weight == 0; every conv/linear weight of the model must be there, and no other one."""
    if not all(isinstance(k, str) for k in state):
        raise MaskError(f"{source}: state_dict keys must be parameter names (strings)")
    everything = prunable(ctx.model, include_first=True, include_last=True)
    convs = {
        k: v
        for k, v in state.items()
        if k in everything or (k.endswith(".weight") and isinstance(v, Tensor) and v.dim() >= 2)
    }
    _checked(convs, everything, f"{source} (checkpoint)")
    return Mask({n: state[n] != 0 for n in ctx.weights()})


def read_mask(path: str, ctx: PruneContext) -> tuple[Mask, str]:
    """The mask in `path` and what kind of file it was."""
    obj = load_tensors(path)
    if not isinstance(obj, dict):
        raise MaskError(f"{path}: holds a {type(obj).__name__}, not a mask or checkpoint dict")
    if not all(isinstance(k, str) for k in obj):
        raise MaskError(f"{path}: keys must be parameter names (strings)")
    if obj.get("format") == FORMAT:
        entries, kind = obj.get("masks", {}), "tost-mask"
    elif isinstance(obj.get("state_dict"), dict):
        return _from_state_dict(obj["state_dict"], ctx, path), "checkpoint"
    elif any(k.endswith("_mask") for k in obj):
        entries, kind = {k[: -len("_mask")]: v for k, v in obj.items() if k.endswith("_mask")}, "mask-dict"
    elif any(not k.endswith(".weight") for k in obj):
        return _from_state_dict(obj, ctx, path), "checkpoint"
    else:
        entries, kind = obj, "mask-dict"
    if not isinstance(entries, dict):
        raise MaskError(f"{path}: the masks entry is a {type(entries).__name__}, not a dict")
    _checked(entries, ctx.weights(), path)
    return Mask.from_binary(entries, path), kind


def find_mask(ctx: PruneContext, opts: Any) -> Pruned:
    """The mask in `prune.path`, whatever `prune.sparsity` says (config insists on a path)."""
    path = ctx.prune.path
    mask, kind = read_mask(path, ctx)
    return Pruned(mask, info={"source": path, "source_kind": kind, "requested_sparsity_ignored": True})


METHOD = Finder(find=find_mask)
