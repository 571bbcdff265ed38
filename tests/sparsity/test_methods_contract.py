"""Every registered mask method keeps its contract: exact counts, valid masks, reproducible, nested rounds.

Parametrized over the registry, so a new method is covered as soon as it is registered (`file` reads
a mask instead of finding one and has its own tests in test_methods.py).
"""

from __future__ import annotations

import copy
import itertools

import pytest
import torch

from tests.conftest import params, same_tensors, tiny_net, tiny_prepared
from tost import config, dense
from tost.prune import context
from tost.runtime import Runtime
from tost.sparsity import methods as methods_pkg
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


NAMES = sorted(set(METHODS) - {"file"})


def test_every_method_with_options_has_test_options():
    assert {n for n, m in METHODS.items() if m.options is not None} == set(OPTIONS)


@pytest.mark.parametrize("scope", ["global", "layerwise"])
@pytest.mark.parametrize("name", NAMES)
def test_exact_sparsity_valid_mask_and_init_untouched(name, scope):
    ctx = make_ctx(scope=scope)
    before = {k: v.clone() for k, v in ctx.model.state_dict().items()}
    mask = find(name, ctx).mask
    mask.check(ctx.weights())
    weights = ctx.weights()
    if scope == "global":
        total = sum(w.numel() for w in weights.values())
        assert mask.stats().total - mask.stats().kept == round(SPARSITY * total)
    else:
        for n, w in weights.items():
            assert int((~mask.tensors[n]).sum()) == round(SPARSITY * w.numel()), n
    after = ctx.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before), "a method modified ctx.model"


def _same(a, b) -> bool:
    return same_tensors(a.tensors, b.tensors)


@pytest.mark.parametrize("name", NAMES)
def test_same_seed_same_mask_other_seed_other_mask(name):
    first, again = find(name, make_ctx(seed=1)).mask, find(name, make_ctx(seed=1)).mask
    assert _same(first, again)
    if name == "synflow":  # data-free and deterministic: only the initialisation matters
        assert _same(first, find(name, make_ctx(seed=2)).mask)
        assert not _same(first, find(name, make_ctx(seed=1, init_seed=5)).mask)
    else:
        assert not _same(first, find(name, make_ctx(seed=2)).mask)


@pytest.mark.parametrize("name", NAMES)
def test_rounds_are_nested(name, monkeypatch):
    """Every selection a method makes keeps a subset of the previous one (recorded by a hook)."""
    made = []
    for mod in vars(methods_pkg).values():
        if hasattr(mod, "select"):
            real = mod.select

            def recording(*args, _real=real, **kwargs):
                made.append(_real(*args, **kwargs))
                return made[-1]

            monkeypatch.setattr(mod, "select", recording)
    mask = find(name, make_ctx(rounds=2)).mask
    assert len(made) >= 2
    assert all(b.is_subset_of(a) for a, b in itertools.pairwise(made))
    assert _same(made[-1], mask)
    kept = [m.stats().kept for m in made]
    assert kept == sorted(kept, reverse=True)
