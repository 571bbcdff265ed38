"""Shared pieces of the trick tests: a tiny net, its mask, fixed batches, an input."""

from __future__ import annotations

import pytest
import torch

from tests.conftest import SHAPE, random_mask, tiny_prepared
from tost import config
from tost.loader import DeviceLoader


def masked(net, sparsity=0.8, seed=0):
    """A random mask, applied to `net` (as the trainer does before `prepare`)."""
    return random_mask(net, sparsity, seed, apply=True)


def batches(n=2, batch=16):
    data = tiny_prepared()
    loader = DeviceLoader(data.train, data.mean, data.std, batch, torch.device("cpu"), train=False)
    fixed = list(loader)[:n]
    return lambda: iter(fixed)


def x_in(seed=1):
    return torch.randn(8, *SHAPE, generator=torch.Generator().manual_seed(seed))


@pytest.fixture
def params(raw_params):
    raw_params["train"].update(epochs=2, batch_size=16, eval_batch_size=64, lr=0.05)
    return config.parse(raw_params)
