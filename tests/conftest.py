"""Shared fixtures: the repository's params as a dict, tiny models and tiny synthetic data."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
import yaml

from tost.data import Prepared, Split

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def raw_params() -> dict:
    """A fresh copy of the repository's params.yaml, to be edited by a test."""
    return copy.deepcopy(yaml.safe_load((ROOT / "params.yaml").read_text()))


def tiny_prepared(n: int = 96, classes: int = 4, size: int = 8, channels: int = 1, seed: int = 0) -> Prepared:
    """Learnable synthetic images: each class is a bright square in its own corner, plus noise."""
    g = torch.Generator().manual_seed(seed)

    def split(m: int) -> Split:
        y = torch.arange(m) % classes
        x = torch.randint(0, 60, (m, channels, size, size), generator=g, dtype=torch.int64)
        half = size // 2
        for c in range(classes):
            r, q = divmod(c % 4, 2)
            x[y == c, :, r * half : (r + 1) * half, q * half : (q + 1) * half] += 150
        return Split(x=x.clamp(0, 255).to(torch.uint8), y=y.to(torch.int64))

    return Prepared(
        train=split(n), val=split(n // 4), test=split(n // 4), num_classes=classes,
        mean=(0.3,) * channels, std=(0.3,) * channels,
    )  # fmt: skip


@pytest.fixture
def tiny_data() -> Prepared:
    return tiny_prepared()
