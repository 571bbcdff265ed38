"""Ghost skip connections: the original jump formula, exact at gate 0, found from conv → BN, removed."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from tests.conftest import tiny_net, tiny_prepared
from tests.tricks.conftest import batches, masked, x_in
from tost.models import MODELS
from tost.runtime import Runtime
from tost.train import Trainer
from tost.tricks.ghost_skip import GhostSkip, Options, jump_sites, restore

OPTS = Options(start=0.3, end=0.5, init=1e-4)


def test_gate_schedule():
    net = tiny_net()
    trick = GhostSkip(OPTS)
    net = trick.prepare(net, masked(net), batches())
    gates = []
    for e in (0, 3, 4, 5, 9):
        trick.on_epoch_start(e, 10, net)
        gates.append(float(net.ghost_skip.gate))
    assert gates == pytest.approx([1, 1, 0.5, 0, 0])


@pytest.mark.parametrize("arch", sorted(MODELS))
def test_jump_sites_are_every_kxk_conv_followed_by_bn_but_the_stem(arch):
    net = tiny_net(arch)
    sites = jump_sites(net)
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    expected = [c for c in convs[1:] if c.kernel_size != (1, 1)]
    assert [conv for _, conv, _ in sites] == expected
    modules = dict(net.named_modules())
    assert all(modules[name] is conv for name, conv, _ in sites)
    assert all(
        isinstance(bn, nn.BatchNorm2d) and bn.num_features == conv.out_channels for _, conv, bn in sites
    )


def test_a_new_model_family_gets_its_jumps_without_the_trick_knowing_it():
    class Tiny(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Conv2d(1, 4, 3, padding=1)
            self.body = nn.ModuleDict({"c": nn.Conv2d(4, 4, 3, padding=1), "n": nn.BatchNorm2d(4)})
            self.down = nn.Conv2d(4, 4, 1)

        def forward(self, x):
            return self.down(self.body["n"](self.body["c"](self.stem(x))))

    assert [name for name, _, _ in jump_sites(Tiny())] == ["body.c"]


@pytest.mark.parametrize(("arch", "jumps"), [("resnet20", 18), ("vgg16", 12)])
def test_ghost_skip_gate_zero_is_the_plain_network(arch, jumps):
    net = tiny_net(arch)
    mask = masked(net, sparsity=0.5)
    before = dict(net.named_parameters())
    plain = copy.deepcopy(net).eval()
    trick = GhostSkip(OPTS)
    net = trick.prepare(net, mask, batches()).eval()
    assert len(jump_sites(net)) == len(net.ghost_skip.jumps) == jumps
    after = dict(net.named_parameters())
    assert all(after[n] is before[n] for n in before)  # nothing renamed: the mask still fits
    assert not any(n in mask.tensors for n in set(after) - set(before))  # the ghosts are dense
    trick.on_epoch_start(0, 10, net)
    net.ghost_skip.gate.fill_(0.0)  # a zero gate is exact even while the jumps are computed
    assert net.ghost_skip.active and torch.equal(net(x_in()), plain(x_in()))
    trick.on_epoch_start(5, 10, net)
    assert not net.ghost_skip.active and torch.equal(net(x_in()), plain(x_in()))
    trick.on_epoch_start(0, 10, net)  # early on (g = 1, batch statistics) the jumps change the output
    assert not torch.allclose(net.train()(x_in()), plain.train()(x_in()), atol=1e-3)
    trick.on_epoch_start(9, 10, net)  # the last epoch: the gate is closed, so finish removes them
    net = trick.finish(net)
    assert not hasattr(net, "ghost_skip") and set(net.state_dict()) == set(plain.state_dict())
    assert trick.kept() == {}


def test_jumps_on_to_the_end_stay_in_the_network_and_restore_from_a_checkpoint():
    """As the original code ran: the gate never closes, so the evaluated (and saved) network has them."""
    net = tiny_net()
    trick = GhostSkip(Options(start=1.0, end=1.0, init=1e-4))
    net = trick.prepare(net, masked(net), batches())
    for epoch in range(10):
        trick.on_epoch_start(epoch, 10, net)
    for p in net.ghost_skip.parameters():
        nn.init.normal_(p)  # as if trained
    net = trick.finish(net).eval()
    assert trick.kept() == {"gate": 1.0} and hasattr(net, "ghost_skip")
    rebuilt = restore(tiny_net(seed=3), trick.kept())
    rebuilt.load_state_dict(net.state_dict(), strict=True)  # the same keys: jumps included
    assert torch.equal(rebuilt.eval()(x_in()), net(x_in()))


def test_ghost_jumps_match_the_original_block_formula():
    net = tiny_net()
    mask = masked(net)
    b = copy.deepcopy(net.layers[1][0]).eval()  # a hook-free copy to write the formula with
    trick = GhostSkip(OPTS)
    net = trick.prepare(net, mask, batches()).eval()
    trick.on_epoch_start(4, 10, net)  # g = 0.5
    j1, j2 = net.ghost_skip.jumps["layers__1__0__conv1"], net.ghost_skip.jumps["layers__1__0__conv2"]
    for j in (j1, j2):  # make the jumps' effect large enough to see
        nn.init.normal_(j[0].weight)
    x = torch.randn(2, 4, 8, 8)
    h1 = b.act1(b.bn1(b.conv1(x)) + 0.5 * j1(x))
    want = b.act2(b.bn2(b.conv2(h1)) + b.shortcut(x) + 0.5 * j2(h1))
    assert torch.allclose(net.layers[1][0](x), want, atol=1e-6)
    assert not torch.allclose(b(x), want, atol=1e-2)


def test_ghost_parameters_are_trained(params):
    net = tiny_net()
    trick = GhostSkip(OPTS)
    t = Trainer(net, masked(net), tiny_prepared(), params.data, params.train, [trick], Runtime.cpu(), 0)
    ghost = t.model.ghost_skip.jumps["layers__0__0__conv1"][0].weight
    assert any(p is ghost for g in t.opt.param_groups for p in g["params"])
    t.run_epoch()
    assert torch.isfinite(ghost).all() and bool((ghost != 1e-4).all())  # every entry trained, none NaN
