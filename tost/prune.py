"""Finding a mask, as one library call: the mask stage and the method tests both use `find`.

It assembles what every method may read (`PruneContext`: the initialisation, the dense network the
`dense` stage trained, seeded training batches, a seeded generator, the train stage's own loop for
methods that train), runs `prune.method`, checks the mask against the model, and returns the mask,
the weights sparse training starts from and the metrics of metrics/mask.json.

Layer collapse is a result, not a crash: a layer the method pruned empty is kept, trained and
recorded (`empty_layers`); only a mask that leaves no path from input to output is refused, naming
the layer that cuts it. `prune.empty_layers: error` restores the strict rule for those who want it.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import logging
import time
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from tost.config import Params
from tost.data import Prepared
from tost.errors import ConfigError, MaskError
from tost.loader import make_loaders
from tost.resume import ResumeDir
from tost.runtime import Runtime
from tost.sparsity import collapse
from tost.sparsity.mask import Mask
from tost.sparsity.methods import METHODS
from tost.sparsity.methods.base import PruneContext
from tost.sparsity.schedule import empty_layer_error
from tost.train import FitResult, Trainer

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Found:
    """A method's result: the mask, where sparse training starts (CPU tensors), metrics/mask.json."""

    mask: Mask
    init: dict[str, Tensor]
    metrics: dict[str, Any]


def context(
    p: Params,
    prepared: Prepared,
    model: nn.Module,
    rt: Runtime,
    resume: ResumeDir | None = None,
    trained: nn.Module | None = None,
) -> PruneContext:
    """What every method may read under params `p`.

    `model` is the initialisation, `trained` the dense network the `dense` stage trained; None means
    `dense.epochs` is 0, and then the init stands for it.
    """
    if p.prune.batch_size > prepared.train.y.numel():  # else the loader would blame train.batch_size
        raise ConfigError(
            f"params.yaml: prune.batch_size={p.prune.batch_size} is larger than the training split "
            f"({prepared.train.y.numel()} images); lower it"
        )
    scoring = dataclasses.replace(p.train, batch_size=p.prune.batch_size)
    loader, _, _ = make_loaders(prepared, p.data, scoring, rt, p.seed)

    def train(net: nn.Module, mask: Mask, epochs: int, name: str, on_epoch_end: Any = None) -> FitResult:
        cfg = dataclasses.replace(p.train, epochs=epochs)
        return Trainer(net, mask, prepared, p.data, cfg, [], rt, p.seed, name).fit(resume, on_epoch_end)

    model = model.to(rt.device)
    return PruneContext(
        prune=p.prune,
        model=model,
        trained=(trained if trained is not None else copy.deepcopy(model)).to(rt.device),
        batches=lambda: itertools.islice(loader, p.prune.batches),
        generator=torch.Generator().manual_seed(p.seed),
        train=train,
        dense_epochs=p.dense.epochs,
        input_shape=prepared.shape,
        resume=resume,
    )


def find(
    p: Params,
    prepared: Prepared,
    model: nn.Module,
    rt: Runtime,
    resume: ResumeDir | None = None,
    trained: nn.Module | None = None,
) -> Found:
    """Run `prune.method` on `model` (left untouched) and describe the mask it found."""
    init = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
    ctx = context(p, prepared, model, rt, resume, trained)
    start = time.perf_counter()
    pruned = METHODS[p.prune.method].find_mask(ctx, p.prune_options.get(p.prune.method))
    seconds = time.perf_counter() - start
    mask = pruned.mask
    mask.check(ctx.weights(), source="the new mask")
    empty = check_collapse(mask, ctx, p)
    stats = mask.stats()
    metrics = {
        "method": p.prune.method,
        "requested_sparsity": p.prune.sparsity,
        "sparsity": stats.sparsity,
        "kept": stats.kept,
        "total": stats.total,
        "rounds": p.prune.rounds,
        "scope": p.prune.scope,
        "seconds": seconds,
        "empty_layers": empty,
        **pruned.info,
        "per_layer": stats.per_layer,
        "kept_per_layer": collapse.kept_per_layer(mask),
        "size_per_layer": {n: t.numel() for n, t in mask.tensors.items()},
    }
    if pruned.rewind is not None:  # lt with rewind_epoch > 0: sparse training starts from there
        init = {k: v.detach().to("cpu", copy=True) for k, v in pruned.rewind.items()}
    log.info("mask: %s sparsity %.4f (requested %.4f) in %.2fs", p.prune.method, stats.sparsity,
             p.prune.sparsity, seconds)  # fmt: skip
    return Found(mask, init, metrics)


def check_collapse(mask: Mask, ctx: PruneContext, p: Params) -> list[str]:
    """The layers the mask empties; an error when that cuts the network or when asked to be strict."""
    empty = collapse.empty_layers(mask)
    if empty and p.prune.empty_layers == "error":
        sizes = {n: t.numel() for n, t in mask.tensors.items()}
        raise empty_layer_error(empty, sizes, p.prune.sparsity, p.prune.scope)
    if not collapse.signal_passes(ctx.model, mask.tensors, ctx.input_shape):
        cut = collapse.cut_by(ctx.model, mask, ctx.input_shape)
        where = (
            f"layer {cut[0]} has no weight and nothing bypasses it" if cut else "its kept weights join none"
        )
        raise MaskError(
            f"{p.prune.method} at sparsity {p.prune.sparsity:g} leaves no path from input to output: "
            f"{where}; lower prune.sparsity or use prune.scope=layerwise"
        )
    if empty:
        log.warning("mask: %d layer(s) pruned empty (layer collapse), kept and trained: %s", len(empty),
                    ", ".join(empty))  # fmt: skip
    return empty
