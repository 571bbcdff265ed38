"""Model registry contract: every architecture builds, runs forward/backward, and is prunable."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tost.models import MODELS, build
from tost.sparsity.mask import prunable


@pytest.mark.parametrize("arch", sorted(MODELS))
@pytest.mark.parametrize("shape", [(1, 8, 8), (3, 32, 32)])
def test_builds_runs_and_is_prunable(arch, shape):
    torch.manual_seed(0)
    net = build(arch, 7, shape, 4)
    x = torch.randn(2, *shape)
    out = net(x)
    assert out.shape == (2, 7)
    out.sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters())
    assert len(prunable(net)) >= 3


@pytest.mark.parametrize("arch", sorted(MODELS))
def test_every_activation_site_is_its_own_module_from_the_factory(arch):
    calls = []

    def act():
        m = nn.SiLU()
        calls.append(m)
        return m

    net = build(arch, 10, (1, 8, 8), 4, act=act)
    sites = [m for m in net.modules() if isinstance(m, nn.SiLU)]
    assert len(sites) == len(calls) > 0
    assert len({id(m) for m in sites}) == len(sites)
    assert not any(isinstance(m, nn.ReLU) for m in net.modules())


def test_resnet_depths_and_widths():
    def convs(n):
        return sum(isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3) for m in n.modules())

    assert convs(build("resnet20", 10, (3, 32, 32), 16)) == 19
    assert convs(build("resnet32", 10, (3, 32, 32), 16)) == 31
    r18 = build("resnet18", 10, (3, 32, 32), 64)
    assert sum(p.numel() for p in r18.parameters()) == 11_173_962  # the paper's CIFAR-10 ResNet-18
    assert r18.fc.in_features == 512
