"""Label smoothing in the original's convention, decaying to plain cross-entropy."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tost.errors import ConfigError
from tost.tricks.label_smooth import LabelSmooth, Options, alpha_at, smoothed_cross_entropy


def _trick(epsilon=0.1, start=0.0, end=1.0):
    return LabelSmooth(Options(epsilon=epsilon, start=start, end=end))


def test_label_smooth_follows_the_originals_alpha_and_decays_to_zero():
    opts = Options(epsilon=0.1, start=0.0, end=1.0)
    assert [alpha_at(e, 10, opts) for e in (0, 5, 10)] == pytest.approx([0.1, 0.05, 0.0])
    assert alpha_at(7, 10, Options(epsilon=0.1, start=0.0, end=0.5)) == 0.0
    assert [alpha_at(e, 10, Options(epsilon=0.1, start=1.0, end=1.0)) for e in (0, 9)] == [
        0.1,
        0.1,
    ]  # upstream
    logits, y, c = torch.randn(32, 5), torch.arange(32) % 5, 5
    trick = _trick()
    for epoch in (0, 3, 7):
        trick.on_epoch_start(epoch, 10, None)
        a = alpha_at(epoch, 10, opts)
        want = F.cross_entropy(logits, y, label_smoothing=a * c / (c - 1))
        assert torch.equal(trick.loss(logits, y), want)  # PyTorch's own result, bit for bit
        q = torch.full((32, c), a / (c - 1)).scatter(1, y[:, None], 1 - a)  # the original's targets
        assert torch.allclose(want, -(q * logits.log_softmax(1)).sum(1).mean(), atol=1e-6)
    trick.on_epoch_start(10, 10, None)
    assert torch.equal(trick.loss(logits, y), F.cross_entropy(logits, y))
    with pytest.raises(ConfigError, match="too large"):
        _trick(epsilon=0.9).loss(torch.randn(2, 2), y[:2] % 2)


def test_the_smoothed_loss_is_torchs_bit_for_bit_with_its_gradient():
    g = torch.Generator().manual_seed(0)
    for trial in range(50):
        logits = (3 * torch.randn(64, 10, generator=g)).requires_grad_()
        y = torch.randint(0, 10, (64,), generator=g)
        alpha = float(torch.rand((), generator=g)) * 0.2
        want = F.cross_entropy(logits, y, label_smoothing=alpha * 10 / 9)
        got = smoothed_cross_entropy(logits, y, torch.tensor(alpha, dtype=torch.float64))
        assert torch.equal(got, want), trial
        assert torch.equal(*(torch.autograd.grad(v, logits)[0] for v in (got, want))), trial
