"""Every registered mask method keeps its contract: exact counts, valid masks, reproducible, nested rounds.

Parametrized over the registry, so a new method is covered as soon as it is registered (`file` reads
a mask instead of finding one and has its own tests in test_methods.py).
"""

from __future__ import annotations

import itertools

import pytest
import torch

from tests.conftest import same_tensors
from tests.sparsity.contexts import OPTIONS, SPARSITY, find, make_ctx
from tost.sparsity import methods as methods_pkg
from tost.sparsity.methods import METHODS

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
