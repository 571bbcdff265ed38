"""Activation statistics, checked on activations whose dead and near-zero fractions are known."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tost import analysis
from tost.runtime import Runtime


class TwoSites(nn.Module):
    """Two ReLU sites: the input itself, and the input shifted down by 1."""

    def __init__(self) -> None:
        super().__init__()
        self.first, self.second = nn.ReLU(), nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.first(x) + self.second(x - 1.0)


def test_fractions_means_and_stds_over_every_batch_of_every_site():
    x1 = torch.tensor([[-1.0, 0.0, 0.005, 2.0]])
    x2 = torch.tensor([[3.0, -0.5, 0.02, 1.0]])
    batches = [(x1, torch.zeros(1)), (x2, torch.zeros(1)), (x1 * 100, torch.zeros(1))]
    stats, samples = analysis.activation_stats(TwoSites(), iter(batches), 2, 0.01, Runtime.cpu())
    first = torch.tensor([0.0, 0.0, 0.005, 2.0, 3.0, 0.0, 0.02, 1.0])  # the first two batches only
    second = torch.tensor([0.0, 0.0, 0.0, 1.0, 2.0, 0.0, 0.0, 0.0])
    assert stats["first"]["zero_fraction"] == 3 / 8
    assert stats["first"]["near_zero_fraction"] == 4 / 8  # 0.005 <= 0.01, 0.02 is not
    assert stats["second"]["zero_fraction"] == 6 / 8 and stats["second"]["near_zero_fraction"] == 6 / 8
    for name, values in (("first", first), ("second", second)):
        assert stats[name]["values"] == 8
        assert stats[name]["mean"] == pytest.approx(float(values.double().mean()))
        assert stats[name]["std"] == pytest.approx(float(values.double().std(unbiased=False)))
        assert torch.equal(samples[name], values)
    assert analysis.summary(stats) == {"mean_zero_fraction": (3 / 8 + 6 / 8) / 2,
                                       "mean_near_zero_fraction": (4 / 8 + 6 / 8) / 2}  # fmt: skip


def test_the_sites_are_the_activation_modules_by_name():
    assert list(analysis.activation_sites(TwoSites())) == ["first", "second"]
