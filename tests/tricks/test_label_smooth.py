"""Label smoothing in the original's convention, decaying to plain cross-entropy."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tost.errors import ConfigError
from tost.tricks.label_smooth import LabelSmooth, Options, alpha_at


def test_label_smooth_follows_the_originals_alpha_and_decays_to_zero():
    assert [alpha_at(e, 10, 0.1, 1.0) for e in (0, 5, 10)] == pytest.approx([0.1, 0.05, 0.0])
    assert alpha_at(7, 10, 0.1, 0.5) == 0.0
    logits, y, c = torch.randn(32, 5), torch.arange(32) % 5, 5
    trick = LabelSmooth(Options(epsilon=0.1, end=1.0))
    for epoch in (0, 3, 7):
        a = alpha_at(epoch, 10, 0.1, 1.0)
        want = F.cross_entropy(logits, y, label_smoothing=a * c / (c - 1))
        assert torch.equal(trick.loss(logits, y, epoch, 10), want)
        q = torch.full((32, c), a / (c - 1)).scatter(1, y[:, None], 1 - a)  # the original's targets
        assert torch.allclose(want, -(q * logits.log_softmax(1)).sum(1).mean(), atol=1e-6)
    assert torch.equal(trick.loss(logits, y, 10, 10), F.cross_entropy(logits, y))
    with pytest.raises(ConfigError, match="too large"):
        LabelSmooth(Options(epsilon=0.9, end=1.0)).loss(torch.randn(2, 2), y[:2] % 2, 0, 10)
