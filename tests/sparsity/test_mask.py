"""The Mask type: prunable set policy, validation against a model, enforcement, save/load."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tost.errors import CheckpointError, MaskError
from tost.models import build
from tost.sparsity.mask import Enforcer, Mask, measured_stats, prunable


@pytest.fixture
def net():
    torch.manual_seed(0)
    return build("resnet20", 10, (1, 8, 8), 4)


def test_prunable_is_conv_and_linear_weights_with_first_last_policy(net):
    all_w = prunable(net, include_first=True, include_last=True)
    assert next(iter(all_w)) == "conv1.weight"
    assert list(all_w)[-1] == "fc.weight"
    assert all(n.endswith(".weight") for n in all_w)
    assert not any("bn" in n or "shortcut.1" in n for n in all_w)
    default = prunable(net)  # first conv pruned, classifier dense (the original code's policy)
    assert "conv1.weight" in default
    assert "fc.weight" not in default
    assert "conv1.weight" not in prunable(net, include_first=False)
    n_convs = sum(isinstance(m, nn.Conv2d) for m in net.modules())
    assert len(default) == n_convs


def test_check_rejects_missing_extra_and_misshaped_entries(net):
    w = prunable(net)
    m = Mask.ones(w)
    m.check(w)
    missing = Mask({k: v for k, v in m.tensors.items() if k != "conv1.weight"})
    with pytest.raises(MaskError, match="missing 1 entry"):
        missing.check(w)
    extra = Mask({**m.tensors, "fc.weight": torch.ones(10, 16, dtype=torch.bool)})
    with pytest.raises(MaskError, match="unknown"):
        extra.check(w)
    shaped = Mask({**m.tensors, "conv1.weight": torch.ones(4, 1, 3, 1, dtype=torch.bool)})
    with pytest.raises(MaskError, match="shape"):
        shaped.check(w)


def test_mask_from_another_architecture_is_refused(net):
    other = build("vgg16", 10, (1, 8, 8), 4)
    with pytest.raises(MaskError, match="another architecture"):
        Mask.ones(prunable(other)).check(prunable(net))


def test_non_binary_values_are_refused():
    with pytest.raises(MaskError, match="neither 0 nor 1"):
        Mask.from_binary({"w": torch.tensor([0.0, 0.5, 1.0])})
    with pytest.raises(MaskError, match="must be bool"):
        Mask({"w": torch.tensor([0, 1])})
    ok = Mask.from_binary({"w": torch.tensor([0.0, 1.0])})
    assert ok.tensors["w"].tolist() == [False, True]


def test_apply_and_enforcer_keep_pruned_weights_zero(net):
    w = prunable(net)
    g = torch.Generator().manual_seed(0)
    m = Mask({n: torch.rand(t.shape, generator=g) > 0.7 for n, t in w.items()})
    m.apply_(w)
    assert m.violations(w) == {}
    with torch.no_grad():
        for t in w.values():
            t.add_(1.0)  # an optimizer step that touches every weight
    assert m.violations(w)
    Enforcer(m, w)()
    assert m.violations(w) == {}
    assert measured_stats(w).kept == m.stats().kept  # kept weights are +1 away from zero almost surely


def test_enforcer_handles_channels_last(net):
    net = net.to(memory_format=torch.channels_last)
    w = prunable(net)
    m = Mask({n: torch.rand(t.shape) > 0.5 for n, t in w.items()})
    Enforcer(m, w)()
    assert m.violations(w) == {}


def test_stats_count_global_and_per_layer():
    m = Mask({"a": torch.tensor([True, False, False, False]), "b": torch.tensor([True, True])})
    s = m.stats()
    assert (s.total, s.kept) == (6, 3)
    assert s.sparsity == pytest.approx(0.5)
    assert s.per_layer == {"a": 0.75, "b": 0.0}


def test_save_load_round_trip(tmp_path, net):
    w = prunable(net)
    m = Mask({n: torch.rand(t.shape) > 0.5 for n, t in w.items()})
    m.save(tmp_path / "m.pt", {"method": "random"})
    back, meta = Mask.load(tmp_path / "m.pt")
    assert meta == {"method": "random"}
    assert all(torch.equal(back.tensors[n], m.tensors[n]) for n in w)


def test_load_refuses_other_files(tmp_path):
    torch.save({"x": torch.zeros(2)}, tmp_path / "plain.pt")
    with pytest.raises(MaskError, match="not a tost mask"):
        Mask.load(tmp_path / "plain.pt")
    (tmp_path / "trunc.pt").write_bytes((tmp_path / "plain.pt").read_bytes()[:50])
    with pytest.raises(CheckpointError, match="truncated or corrupted"):
        Mask.load(tmp_path / "trunc.pt")
