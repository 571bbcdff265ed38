"""Mask-finding contexts as the mask stage builds them, on tiny data: shared by the mask method tests."""

from __future__ import annotations

import copy

import torch

from tests.conftest import params, tiny_net, tiny_prepared
from tost import config, dense
from tost.prune import context
from tost.runtime import Runtime
from tost.sparsity.methods import METHODS, gmp, grasp, lt, synflow
from tost.sparsity.methods.base import PruneContext, Pruned

DATA = tiny_prepared(n=64)
# Tiny option values: the real ones (params.yaml) are exercised by the stage test.
OPTIONS = {
    "gmp": gmp.Options(start=0.0, end=1.0),
    "grasp": grasp.Options(temperature=200.0),
    "synflow": synflow.Options(iters=4),
    "lt": lt.Options(rewind_epoch=0),
}
SPARSITY = 0.8


def ctx_params(sparsity: float = SPARSITY, scope: str = "global", rounds: int = 1, seed: int = 0,
               dense_epochs: int = 2, **changes) -> config.Params:  # fmt: skip
    """Small, fast settings: the mask stage's own params with tiny training and scoring batches."""
    return params(**{
        "seed": seed, "prune.sparsity": sparsity, "prune.scope": scope, "prune.rounds": rounds,
        "dense.epochs": dense_epochs, "prune.batches": 2, "prune.batch_size": 16,
        "train.batch_size": 32, "train.eval_batch_size": 64, "train.lr": 0.05, "train.device": "cpu",
        "train.checkpoint_every": 1,  # the resume tests kill runs between epochs
        **changes,
    })  # fmt: skip


_DENSE: dict[tuple, dict] = {}  # (seed, dense epochs, init seed) -> trained weights, trained once


def make_ctx(init_seed: int = 0, model: torch.nn.Module | None = None, resume=None, **kw) -> PruneContext:
    """A real context, as the mask stage builds it: resnet20 (width 4) on tiny synthetic data, with the
    dense network trained as the dense stage would (cached across tests with the same settings)."""
    changes = {k: kw.pop(k) for k in list(kw) if "." in k}
    p = ctx_params(**kw, **changes)
    trained = None
    if p.dense.epochs:
        key = (p.seed, p.dense.epochs, init_seed) if model is None else None  # a given model: no cache
        state = _DENSE.get(key) if key else None
        if state is None:
            net = model if model is not None else tiny_net(seed=init_seed)
            state = dense.fit(p, DATA, copy.deepcopy(net), Runtime.cpu()).model.state_dict()
            if key:
                _DENSE[key] = state
        trained = copy.deepcopy(model if model is not None else tiny_net(seed=init_seed))
        trained.load_state_dict(state)
    init = model if model is not None else tiny_net(seed=init_seed)
    return context(p, DATA, init, Runtime.cpu(), resume, trained)


def find(name: str, ctx: PruneContext) -> Pruned:
    return METHODS[name].find_mask(ctx, OPTIONS.get(name))
