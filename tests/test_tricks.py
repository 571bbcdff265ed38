"""The four ToST tricks: schedules, exactness at the ends of each schedule, the mask, and clean removal."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tests.conftest import tiny_prepared
from tost import analysis, config
from tost.errors import ConfigError
from tost.loader import DeviceLoader
from tost.models import build
from tost.runtime import Runtime
from tost.sparsity.mask import Mask, prunable
from tost.train import Trainer, fit
from tost.tricks import VARIANTS, build_variant, lrsi
from tost.tricks.ghost_skip import GhostSkip, GhostSkipOptions, gate_at, jump_sites
from tost.tricks.label_smooth import LabelSmooth, LabelSmoothOptions, alpha_at
from tost.tricks.soft_act import BlendAct, SoftAct, SoftActOptions, blend_at

SHAPE = (1, 8, 8)


def _net(arch="resnet20", seed=0):
    torch.manual_seed(seed)
    return build(arch, 4, SHAPE, 4)


def _mask(net, sparsity=0.8, seed=0):
    g = torch.Generator().manual_seed(seed)
    mask = Mask({n: torch.rand(w.shape, generator=g) >= sparsity for n, w in prunable(net).items()})
    mask.apply_(prunable(net))
    return mask


def _batches(n=2, batch=16):
    data = tiny_prepared()
    loader = DeviceLoader(data.train, data.mean, data.std, batch, torch.device("cpu"), train=False)
    fixed = list(loader)[:n]
    return lambda: iter(fixed)


def _x(seed=1):
    return torch.randn(8, *SHAPE, generator=torch.Generator().manual_seed(seed))


@pytest.fixture
def params(raw_params):
    raw_params["train"].update(epochs=2, batch_size=16, eval_batch_size=64, lr=0.05)
    return config.parse(raw_params)


def test_variants_are_the_papers():
    assert set(VARIANTS) == {"baseline", "soft_act", "ghost_skip", "label_smooth", "lrsi", "tost"}
    assert set(VARIANTS["tost"]) == {"soft_act", "ghost_skip", "label_smooth", "lrsi"}


@pytest.mark.parametrize("arch", ["resnet20", "vgg16"])
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_every_variant_trains_and_leaves_the_plain_masked_network(params, variant, arch):
    net = _net(arch)
    mask = _mask(net)
    tricks = build_variant(variant, params.tricks.options)
    res = fit(net, mask, tiny_prepared(), params.data, params.train, tricks, Runtime.cpu(), seed=0)
    assert mask.violations(prunable(res.model)) == {}
    plain = _net(arch, seed=5)
    plain.load_state_dict(res.model.state_dict(), strict=True)
    assert [type(m) for m in res.model.modules()] == [type(m) for m in plain.modules()]
    assert not any(isinstance(m, BlendAct) for m in res.model.modules())
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in res.model.modules())
    res.model.eval()
    plain.eval()
    assert torch.equal(res.model(_x()), plain(_x()))


# -- soft_act ---------------------------------------------------------------------------------------
def test_blend_schedule():
    assert [blend_at(e, 10, 0.3, 0.5) for e in (0, 3, 4, 5, 9)] == pytest.approx([0, 0, 0.5, 1, 1])
    assert [blend_at(e, 10, 0.4, 0.4) for e in (3, 4, 5)] == [0.0, 1.0, 1.0]  # a hard switch


@pytest.mark.parametrize(("name", "soft"), [("swish", F.silu), ("mish", F.mish)])
def test_soft_act_is_soft_then_exactly_relu(name, soft):
    net, seen = _net(), []
    relus = [m for m in net.modules() if isinstance(m, nn.ReLU)]
    trick = SoftAct(SoftActOptions(activation=name, start=0.3, end=0.5))
    net = trick.prepare(net, _mask(net), _batches())
    sites = analysis.activation_sites(net)
    assert len(sites) == len(relus) and all(isinstance(m, BlendAct) for m in sites.values())
    for m in sites.values():
        m.register_forward_hook(lambda _m, args, out: seen.append((args[0], out)))
    for epoch, expected in ((0, soft), (5, F.relu), (9, F.relu)):
        trick.on_epoch_start(epoch, 10, net)
        seen.clear()
        net(_x())
        assert len(seen) == len(relus)
        assert all(torch.equal(out, expected(inp)) for inp, out in seen)
    trick.on_epoch_start(4, 10, net)
    seen.clear()
    net(_x())
    assert all(torch.allclose(out, 0.5 * soft(inp) + 0.5 * F.relu(inp)) for inp, out in seen)
    net = trick.finish(net)
    assert [m for m in net.modules() if isinstance(m, nn.ReLU)] == relus  # the very same objects


# -- ghost_skip -------------------------------------------------------------------------------------
def test_gate_schedule():
    assert [gate_at(e, 10, 0.3, 0.5) for e in (0, 3, 4, 5, 9)] == pytest.approx([1, 1, 0.5, 0, 0])


@pytest.mark.parametrize(("arch", "jumps"), [("resnet20", 18), ("vgg16", 13)])
def test_ghost_skip_gate_zero_is_the_plain_network(arch, jumps):
    net = _net(arch)
    mask = _mask(net, sparsity=0.5)
    before = dict(net.named_parameters())
    plain = copy.deepcopy(net).eval()
    trick = GhostSkip(GhostSkipOptions(start=0.3, end=0.5, init=1e-4))
    net = trick.prepare(net, mask, _batches()).eval()
    assert len(jump_sites(net)) == len(net.ghost_skip.jumps) == jumps
    after = dict(net.named_parameters())
    assert all(after[n] is before[n] for n in before)  # nothing renamed: the mask still fits
    assert not any(n in mask.tensors for n in set(after) - set(before))  # the ghosts are dense
    trick.on_epoch_start(0, 10, net)
    net.ghost_skip.gate.fill_(0.0)  # a zero gate is exact even while the jumps are computed
    assert net.ghost_skip.active and torch.equal(net(_x()), plain(_x()))
    trick.on_epoch_start(5, 10, net)
    assert not net.ghost_skip.active and torch.equal(net(_x()), plain(_x()))
    trick.on_epoch_start(0, 10, net)  # early on (g = 1, batch statistics) the jumps change the output
    assert not torch.allclose(net.train()(_x()), plain.train()(_x()), atol=1e-3)
    net = trick.finish(net)
    assert not hasattr(net, "ghost_skip") and set(net.state_dict()) == set(plain.state_dict())


def test_ghost_jumps_match_the_original_block_formula():
    net = _net()
    mask = _mask(net)
    b = copy.deepcopy(net.layers[1][0]).eval()  # a hook-free copy to write the formula with
    trick = GhostSkip(GhostSkipOptions(start=0.3, end=0.5, init=1e-4))
    net = trick.prepare(net, mask, _batches()).eval()
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
    net = _net()
    trick = GhostSkip(GhostSkipOptions(start=0.3, end=0.5, init=1e-4))
    t = Trainer(net, _mask(net), tiny_prepared(), params.data, params.train, [trick], Runtime.cpu(), 0)
    ghost = t.model.ghost_skip.jumps["layers__0__0__conv1"][0].weight
    assert any(p is ghost for g in t.opt.param_groups for p in g["params"])
    t.run_epoch()
    assert not torch.all(ghost == 1e-4)


# -- label_smooth -----------------------------------------------------------------------------------
def test_label_smooth_follows_the_originals_alpha_and_decays_to_zero():
    assert [alpha_at(e, 10, 0.1, 1.0) for e in (0, 5, 10)] == pytest.approx([0.1, 0.05, 0.0])
    assert alpha_at(7, 10, 0.1, 0.5) == 0.0
    logits, y, c = torch.randn(32, 5), torch.arange(32) % 5, 5
    trick = LabelSmooth(LabelSmoothOptions(epsilon=0.1, end=1.0))
    for epoch in (0, 3, 7):
        a = alpha_at(epoch, 10, 0.1, 1.0)
        want = F.cross_entropy(logits, y, label_smoothing=a * c / (c - 1))
        assert torch.equal(trick.loss(logits, y, epoch, 10), want)
        q = torch.full((32, c), a / (c - 1)).scatter(1, y[:, None], 1 - a)  # the original's targets
        assert torch.allclose(want, -(q * logits.log_softmax(1)).sum(1).mean(), atol=1e-6)
    assert torch.equal(trick.loss(logits, y, 10, 10), F.cross_entropy(logits, y))
    with pytest.raises(ConfigError, match="too large"):
        LabelSmooth(LabelSmoothOptions(epsilon=0.9, end=1.0)).loss(torch.randn(2, 2), y[:2] % 2, 0, 10)


# -- lrsi -------------------------------------------------------------------------------------------
def _opts(**kw):
    base = dict(alg="sgd", lr=0.05, iters=40, eta=0.1, gamma=1.0, min_scale=0.01, grad_clip=1.0,
                normalize_grad=True)  # fmt: skip
    return lrsi.LrsiOptions(**{**base, **kw})


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


def test_lrsi_scales_are_bounded_and_the_mask_and_bn_stats_hold():
    net, batches = _net(), _batches()
    mask = _mask(net)
    buffers = {k: v.clone() for k, v in net.state_dict().items() if "running" in k or "num_batches" in k}
    trick = lrsi.Lrsi(_opts(lr=0.5, iters=10, gamma=1e9, min_scale=0.3))
    net = trick.prepare(net.train(), mask, batches)
    assert mask.violations(prunable(net)) == {}
    assert all(torch.equal(net.state_dict()[k], v) for k, v in buffers.items())
    assert all(m.training for m in net.modules())
    assert trick.scales and all(s >= (0.0 if n.endswith("bias") else 0.3) for n, s in trick.scales.items())
    assert min(trick.scales.values()) < 0.95 or max(trick.scales.values()) > 1.05  # it did learn
    m = trick.metrics()
    assert m["lrsi_scale_min"] <= m["lrsi_scale_mean"] <= m["lrsi_scale_max"] and m["lrsi_iters"] == 10


def test_lrsi_lookahead_is_masked(monkeypatch):
    net = _net()
    mask, seen = _mask(net), []
    real = lrsi.functional_call

    def spy(model, ahead, args):
        seen.append(all(bool((ahead[n][~m] == 0).all()) for n, m in mask.tensors.items()))
        return real(model, ahead, args)

    monkeypatch.setattr(lrsi, "functional_call", spy)
    lrsi.Lrsi(_opts(iters=3, gamma=1e9)).prepare(net, mask, _batches())
    assert seen == [True] * 3


def test_lrsi_enforces_the_gradient_norm_constraint():
    batches = _batches()
    net = _net()
    mask = _mask(net)
    start = _grad_norm(net, mask, batches)
    gamma = 0.5 * start
    trick = lrsi.Lrsi(_opts(gamma=gamma))
    net = trick.prepare(net, mask, batches)
    assert all(c == (n > gamma) for n, c in trick.history)  # a constraint step exactly when ‖g‖ > γ
    assert trick.history[0][1] and min(n for n, _ in trick.history) <= gamma
    assert _grad_norm(net, mask, batches) <= 1.25 * gamma
    free = _net()  # control: the same run without the constraint ends far above γ
    lrsi.Lrsi(_opts(gamma=1e9)).prepare(free, mask, batches)
    assert _grad_norm(free, mask, batches) > 2 * gamma


def test_lrsi_sign_algorithm_runs():
    net = _net()
    mask = _mask(net)
    trick = lrsi.Lrsi(_opts(alg="adam", iters=4, gamma=1e9))
    trick.prepare(net, mask, _batches())
    assert mask.violations(prunable(net)) == {} and len(trick.history) == 4


def test_tricks_options_are_required_in_params(raw_params):
    del raw_params["tricks"]["lrsi"]
    with pytest.raises(ConfigError, match="tricks.lrsi"):
        config.parse(raw_params)
    raw_params["tricks"]["lrsi"] = {**dataclasses.asdict(_opts()), "gamma": -1.0}
    with pytest.raises(ConfigError, match="tricks.lrsi"):
        config.parse(raw_params)
