"""LRsI (mask-aware GradInit): bounded scales, the mask and BN statistics held, the norm constraint."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tests.conftest import tiny_net
from tests.tricks.conftest import batches, masked
from tost import config
from tost.errors import ConfigError
from tost.sparsity.mask import prunable
from tost.tricks import lrsi


def _opts(**kw):
    base = dict(alg="sgd", lr=0.05, iters=40, eta=0.1, gamma=1.0, min_scale=0.01, grad_clip=1.0,
                normalize_grad=True)  # fmt: skip
    return lrsi.Options(**{**base, **kw})


def _grad_norm(net, mask, batches):
    names, ps, _ = zip(*lrsi.scaled_params(net, 0.01), strict=True)
    x, y = (torch.cat(t) for t in zip(*batches(), strict=True))
    with lrsi.batch_stats_only(net):
        gs = torch.autograd.grad(F.cross_entropy(net(x), y), ps)
    gs = [g * mask.tensors[n] if n in mask.tensors else g for n, g in zip(names, gs, strict=True)]
    return float(lrsi.grad_norm(gs, "sgd"))


def test_scale_adam_first_step_moves_each_scale_by_lr():
    p = nn.Parameter(torch.tensor([3.0, 4.0]))
    opt = lrsi.ScaleAdam([p], [0.01], lr=0.1, clip=1.0)
    opt.step([torch.tensor([1.0, 1.0])], constraint=False)  # dL/dα > 0: shrink by lr (bias-corrected)
    assert float(opt.alpha[0]) == pytest.approx(0.9) and float(p.detach().norm()) == pytest.approx(4.5)
    opt.step([torch.tensor([-1.0, -1.0])], constraint=True)  # own first moment: grows by lr
    assert float(opt.alpha[0]) == pytest.approx(1.0, abs=1e-3)


def test_scale_adam_keeps_float64_runs_in_float64():
    p = nn.Parameter(torch.tensor([3.0, 4.0], dtype=torch.float64))
    opt = lrsi.ScaleAdam([p], [0.01], lr=0.1, clip=1.0)
    opt.step([torch.tensor([1.0, 1.0], dtype=torch.float64)], constraint=False)
    assert opt.alpha.dtype == opt.n0.dtype == torch.float64
    assert float(p.detach().norm()) == pytest.approx(5.0 * float(opt.alpha[0]), rel=1e-15, abs=0)
    assert abs(float(opt.alpha[0]) - 0.9) < 1e-7  # (1 - 0.1 · m̂ / (√v̂ + eps)) in float64, not float32's 1e-8


def test_lrsi_scales_are_bounded_and_the_mask_and_bn_stats_hold():
    net, fixed = tiny_net(), batches()
    mask = masked(net)
    buffers = {k: v.clone() for k, v in net.state_dict().items() if "running" in k or "num_batches" in k}
    trick = lrsi.Lrsi(_opts(lr=0.5, iters=10, gamma=1e9, min_scale=0.3))
    net = trick.prepare(net.train(), mask, fixed)
    assert mask.violations(prunable(net)) == {}
    assert all(torch.equal(net.state_dict()[k], v) for k, v in buffers.items())
    assert all(m.training for m in net.modules())
    assert trick.scales and all(s >= (0.0 if n.endswith("bias") else 0.3) for n, s in trick.scales.items())
    assert min(trick.scales.values()) < 0.95 or max(trick.scales.values()) > 1.05  # it did learn
    m = trick.metrics()
    assert m["lrsi_scale_min"] <= m["lrsi_scale_mean"] <= m["lrsi_scale_max"] and m["lrsi_iters"] == 10


def test_lrsi_lookahead_is_masked(monkeypatch):
    net = tiny_net()
    mask, seen = masked(net), []
    real = lrsi.functional_call

    def spy(model, ahead, args):
        seen.append(all(bool((ahead[n][~m] == 0).all()) for n, m in mask.tensors.items()))
        return real(model, ahead, args)

    monkeypatch.setattr(lrsi, "functional_call", spy)
    lrsi.Lrsi(_opts(iters=3, gamma=1e9)).prepare(net, mask, batches())
    assert seen == [True] * 3


def test_lrsi_enforces_the_gradient_norm_constraint():
    fixed = batches()
    net = tiny_net()
    mask = masked(net)
    start = _grad_norm(net, mask, fixed)
    gamma = 0.5 * start
    trick = lrsi.Lrsi(_opts(gamma=gamma))
    net = trick.prepare(net, mask, fixed)
    assert all(c == (n > gamma) for n, c in trick.history)  # a constraint step exactly when ‖g‖ > γ
    assert trick.history[0][1] and min(n for n, _ in trick.history) <= gamma
    assert _grad_norm(net, mask, fixed) <= 1.25 * gamma
    free = tiny_net()  # control: the same run without the constraint ends far above γ
    lrsi.Lrsi(_opts(gamma=1e9)).prepare(free, mask, fixed)
    assert _grad_norm(free, mask, fixed) > 2 * gamma


def test_lrsi_sign_algorithm_uses_the_l1_norm_and_moves_each_scale_by_lr():
    net = tiny_net()
    mask = masked(net)
    fixed = batches()
    names, ps, _ = zip(*lrsi.scaled_params(net, 0.01), strict=True)
    norms = {n: float(p.detach().norm()) for n, p in zip(names, ps, strict=True)}
    x, y = (torch.cat(t) for t in zip(*fixed(), strict=True))
    with lrsi.batch_stats_only(net):
        gs = torch.autograd.grad(F.cross_entropy(net(x), y), ps)
    gs = [g * mask.tensors[n] if n in mask.tensors else g for n, g in zip(names, gs, strict=True)]
    l1 = float(sum(g.abs().sum() for g in gs))
    trick = lrsi.Lrsi(_opts(alg="adam", iters=1, gamma=1e9, lr=0.05))
    trick.prepare(net, mask, fixed)
    assert trick.history[0][0] == pytest.approx(l1, rel=1e-5)  # the L1 norm, not the L2 one
    assert not trick.history[0][1]  # far below gamma: an objective step
    live = [n for n in names if norms[n] > 0]
    moved = {n: trick.scales[n] for n in live}
    # Adam's first bias-corrected step is ±lr for every scale whose gradient is not 0 (or clipped to 0)
    assert all(s == pytest.approx(1.0 - 0.05, abs=1e-6) or s == pytest.approx(1.0 + 0.05, abs=1e-6)
               or s == pytest.approx(1.0) for s in moved.values())  # fmt: skip
    assert sum(abs(s - 1.0) > 0.04 for s in moved.values()) > len(moved) // 2
    assert mask.violations(prunable(net)) == {}


def test_tricks_options_are_required_in_params(raw_params):
    del raw_params["tricks"]["lrsi"]
    with pytest.raises(ConfigError, match="tricks.lrsi"):
        config.parse(raw_params)
    raw_params["tricks"]["lrsi"] = {**dataclasses.asdict(_opts()), "gamma": -1.0}
    with pytest.raises(ConfigError, match="tricks.lrsi"):
        config.parse(raw_params)
