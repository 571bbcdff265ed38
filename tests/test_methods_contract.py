"""Every registered mask method keeps its contract: exact counts, valid masks, reproducible, nested rounds.

Parametrized over the registry, so a new method is covered as soon as it is registered (`file` reads
a mask instead of finding one and has its own tests in test_methods.py).
"""

from __future__ import annotations

import dataclasses
import itertools
from pathlib import Path

import pytest
import torch
import yaml

from tests.conftest import tiny_prepared
from tost import config
from tost.models import build
from tost.runtime import Runtime
from tost.sparsity import methods as methods_pkg
from tost.sparsity.methods import METHODS, gmp, grasp, lt, synflow
from tost.sparsity.methods.base import PruneContext
from tost.train import fit, make_loaders

ROOT = Path(__file__).resolve().parents[1]
DATA = tiny_prepared(n=64)
SHAPE = (1, 8, 8)
# Tiny option values: the real ones (params.yaml) are exercised by the stage test.
OPTIONS = {
    "gmp": gmp.Options(start=0.0, end=1.0),
    "grasp": grasp.Options(temperature=200.0),
    "synflow": synflow.Options(iters=4),
    "lt": lt.Options(rewind_epoch=0),
}
SPARSITY = 0.8


def _params() -> config.Params:
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["train"].update(batch_size=32, eval_batch_size=64, lr=0.05, device="cpu", compile=False)
    return config.parse(raw)


def make_ctx(
    sparsity: float = SPARSITY,
    scope: str = "global",
    rounds: int = 1,
    seed: int = 0,
    init_seed: int = 0,
    pretrain_epochs: int = 2,
    model: torch.nn.Module | None = None,
    **kw,
) -> PruneContext:
    """A real context: resnet20 (width 4) on tiny synthetic data, trained with the project's `fit`."""
    p = _params()
    if model is None:
        torch.manual_seed(init_seed)
        model = build("resnet20", DATA.num_classes, SHAPE, 4)
    loader_cfg = dataclasses.replace(p.train, batch_size=16)
    loader, _, _ = make_loaders(DATA, p.data, loader_cfg, Runtime.cpu(), seed)

    def train(net, mask, epochs, name, on_epoch_end=None):
        cfg = dataclasses.replace(p.train, epochs=epochs)
        return fit(
            net, mask, DATA, p.data, cfg, [], Runtime.cpu(), seed, name=name, on_epoch_end=on_epoch_end
        )

    fields = {
        "model": model,
        "sparsity": sparsity,
        "scope": scope,
        "rounds": rounds,
        "include_first": True,
        "include_last": False,
        "batches": lambda: itertools.islice(loader, 2),
        "generator": torch.Generator().manual_seed(seed),
        "device": torch.device("cpu"),
        "train": train,
        "pretrain_epochs": pretrain_epochs,
        "input_shape": SHAPE,
    }
    fields.update(kw)
    return PruneContext(**fields)


def find(name: str, ctx: PruneContext):
    return METHODS[name].find_mask(ctx, OPTIONS.get(name))


NAMES = sorted(set(METHODS) - {"file"})


def test_every_method_with_options_has_test_options():
    assert {n for n, m in METHODS.items() if m.options is not None} == set(OPTIONS)


@pytest.mark.parametrize("scope", ["global", "layerwise"])
@pytest.mark.parametrize("name", NAMES)
def test_exact_sparsity_valid_mask_and_init_untouched(name, scope):
    ctx = make_ctx(scope=scope)
    before = {k: v.clone() for k, v in ctx.model.state_dict().items()}
    mask = find(name, ctx)
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
    return all(torch.equal(a.tensors[n], b.tensors[n]) for n in a.tensors)


@pytest.mark.parametrize("name", NAMES)
def test_same_seed_same_mask_other_seed_other_mask(name):
    first, again = find(name, make_ctx(seed=1)), find(name, make_ctx(seed=1))
    assert _same(first, again)
    if name == "synflow":  # data-free and deterministic: only the initialisation matters
        assert _same(first, find(name, make_ctx(seed=2)))
        assert not _same(first, find(name, make_ctx(seed=1, init_seed=5)))
    else:
        assert not _same(first, find(name, make_ctx(seed=2)))


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
    mask = find(name, make_ctx(rounds=2))
    assert len(made) >= 2
    assert all(b.is_subset_of(a) for a, b in itertools.pairwise(made))
    assert _same(made[-1], mask)
    kept = [m.stats().kept for m in made]
    assert kept == sorted(kept, reverse=True)
