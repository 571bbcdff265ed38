"""Every variant on every model: it trains, keeps the mask, and leaves the plain network behind."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from tests.conftest import fit, tiny_net, tiny_prepared
from tests.tricks.conftest import masked, x_in
from tost.errors import ConfigError
from tost.models import MODELS
from tost.sparsity.mask import prunable
from tost.tricks import TRICKS, VARIANTS, build_variant
from tost.tricks.base import Trick, TrickEntry
from tost.tricks.soft_act import BlendAct


def test_every_trick_is_a_variant_of_its_own_and_tost_has_them_all():
    assert "baseline" in VARIANTS and VARIANTS["baseline"] == ()
    for name in TRICKS:
        assert VARIANTS[name] == (name,)
    assert sorted(VARIANTS["tost"]) == sorted(TRICKS)
    assert all(set(tricks) <= set(TRICKS) for tricks in VARIANTS.values())


def test_at_most_one_trick_of_a_variant_defines_the_loss(raw_params, monkeypatch):
    from tost import config

    options = config.parse(raw_params).tricks.options
    for variant in VARIANTS:  # the registered variants are consistent
        assert sum(t.overrides_loss for t in build_variant(variant, options)) <= 1

    class Focal(Trick):
        def loss(self, logits, target, epoch, epochs):
            return logits.sum()

    monkeypatch.setitem(TRICKS, "focal", TrickEntry(options=None, make=lambda _opts: Focal()))
    monkeypatch.setitem(VARIANTS, "two_losses", ("label_smooth", "focal"))
    with pytest.raises(ConfigError, match=r"two_losses: tricks \['label_smooth', 'focal'\] both define"):
        build_variant("two_losses", options)


@pytest.mark.parametrize("arch", sorted(MODELS))
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_every_variant_trains_and_leaves_the_plain_masked_network(params, variant, arch):
    net = tiny_net(arch)
    mask = masked(net)
    options = dict(params.tricks.options)  # GradInit has tests of its own: 2 of its iterations do here
    options["lrsi"] = dataclasses.replace(options["lrsi"], iters=2)
    tricks = build_variant(variant, options)
    res = fit(net, mask, tiny_prepared(), params.data, params.train, tricks)
    assert mask.violations(prunable(res.model)) == {}
    plain = tiny_net(arch, seed=5)
    plain.load_state_dict(res.model.state_dict(), strict=True)
    assert [type(m) for m in res.model.modules()] == [type(m) for m in plain.modules()]
    assert not any(isinstance(m, BlendAct) for m in res.model.modules())
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in res.model.modules())
    res.model.eval()
    plain.eval()
    assert torch.equal(res.model(x_in()), plain(x_in()))
    assert isinstance(res.model, nn.Module)
