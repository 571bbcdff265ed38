"""Finding a mask, as one library call: the mask stage and the method tests both use `find`.

It assembles what every method may read (`PruneContext`: the initialisation, seeded training batches,
a seeded generator, the train stage's own loop for methods that train), runs `prune.method`, checks
the mask against the model, and returns the mask, the weights sparse training starts from and the
metrics of metrics/mask.json.
"""

from __future__ import annotations

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
from tost.errors import ConfigError
from tost.loader import make_loaders
from tost.resume import ResumeDir
from tost.runtime import Runtime
from tost.sparsity.mask import Mask
from tost.sparsity.methods import METHODS
from tost.sparsity.methods.base import PruneContext
from tost.train import FitResult, Trainer

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Found:
    """A method's result: the mask, where sparse training starts (CPU tensors), metrics/mask.json."""

    mask: Mask
    init: dict[str, Tensor]
    metrics: dict[str, Any]


def context(
    p: Params, prepared: Prepared, model: nn.Module, rt: Runtime, resume: ResumeDir | None = None
) -> PruneContext:
    """What every method may read, for `model` (the dense initialisation) under params `p`."""
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

    return PruneContext(
        prune=p.prune,
        model=model.to(rt.device),
        batches=lambda: itertools.islice(loader, p.prune.batches),
        generator=torch.Generator().manual_seed(p.seed),
        train=train,
        pretrain_epochs=p.prune.pretrain_epochs,
        input_shape=prepared.shape,
        resume=resume,
    )


def find(
    p: Params, prepared: Prepared, model: nn.Module, rt: Runtime, resume: ResumeDir | None = None
) -> Found:
    """Run `prune.method` on `model` (left untouched) and describe the mask it found."""
    init = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
    ctx = context(p, prepared, model, rt, resume)
    start = time.perf_counter()
    pruned = METHODS[p.prune.method].find_mask(ctx, p.prune_options.get(p.prune.method))
    seconds = time.perf_counter() - start
    mask = pruned.mask
    mask.check(ctx.weights(), source="the new mask")
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
        **pruned.info,
        "per_layer": stats.per_layer,
    }
    if pruned.rewind is not None:  # lt with rewind_epoch > 0: sparse training starts from there
        init = {k: v.detach().to("cpu", copy=True) for k, v in pruned.rewind.items()}
    log.info("mask: %s sparsity %.4f (requested %.4f) in %.2fs", p.prune.method, stats.sparsity,
             p.prune.sparsity, seconds)  # fmt: skip
    return Found(mask, init, metrics)
