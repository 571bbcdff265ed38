"""Ghost soft neurons: soft early, a linear blend, exactly ReLU after, the original modules back."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tests.conftest import tiny_net
from tests.tricks.conftest import batches, masked, x_in
from tost import analysis
from tost.schedules import Window
from tost.tricks.soft_act import BlendAct, Options, SoftAct, restore


def test_blend_schedule():
    w = Window(0.3, 0.5)
    assert [w.ramp(e, 10) for e in (0, 3, 4, 5, 9)] == pytest.approx([0, 0, 0.5, 1, 1])
    assert [Window(0.4, 0.4).ramp(e, 10) for e in (3, 4, 5)] == [0.0, 1.0, 1.0]  # a hard switch
    with pytest.raises(ValueError, match="start/end"):
        Window(0.6, 0.5)


@pytest.mark.parametrize(("name", "soft"), [("swish", F.silu), ("mish", F.mish)])
def test_soft_act_is_soft_then_exactly_relu(name, soft):
    net, seen = tiny_net(), []
    relus = [m for m in net.modules() if isinstance(m, nn.ReLU)]
    trick = SoftAct(Options(activation=name, start=0.3, end=0.5))
    net = trick.prepare(net, masked(net), batches())
    sites = analysis.activation_sites(net)
    assert len(sites) == len(relus) and all(isinstance(m, BlendAct) for m in sites.values())
    for m in sites.values():
        m.register_forward_hook(lambda _m, args, out: seen.append((args[0], out)))
    for epoch, expected in ((0, soft), (4, lambda x: 0.5 * soft(x) + 0.5 * F.relu(x))):
        trick.on_epoch_start(epoch, 10, net)
        seen.clear()
        net(x_in())
        assert len(seen) == len(relus)
        assert all(torch.allclose(out, expected(inp)) for inp, out in seen)
        assert epoch or all(torch.equal(out, expected(inp)) for inp, out in seen)
    assert trick.graph_key() is True
    trick.on_epoch_start(5, 10, net)  # λ = 1: the original ReLU modules are back, the blends gone
    assert [m for m in net.modules() if isinstance(m, nn.ReLU)] == relus
    assert not any(isinstance(m, BlendAct) for m in net.modules()) and trick.graph_key() is False
    trick.on_epoch_start(9, 10, net)  # the last epoch computes ReLU: finish keeps the ReLUs
    net = trick.finish(net)
    assert trick.kept() == {}
    assert [m for m in net.modules() if isinstance(m, nn.ReLU)] == relus  # the very same objects


def test_a_soft_activation_on_to_the_end_stays_in_the_network_and_restores():
    net = tiny_net()
    trick = SoftAct(Options(activation="mish", start=1.0, end=1.0))
    net = trick.prepare(net, masked(net), batches())
    for epoch in range(10):
        trick.on_epoch_start(epoch, 10, net)
    net = trick.finish(net).eval()
    assert trick.kept() == {"activation": "mish", "lam": 0.0}
    assert any(isinstance(m, BlendAct) for m in net.modules())  # what every accuracy was measured with
    rebuilt = restore(tiny_net(seed=3), trick.kept())
    rebuilt.load_state_dict(net.state_dict(), strict=True)
    assert torch.equal(rebuilt.eval()(x_in()), net(x_in()))
