"""The embedded default: scikit-learn's digits."""

from __future__ import annotations

from pathlib import Path

import torch

from tost.datasets import digits


def test_digits_is_embedded_uint8_with_ten_classes():
    raw = digits.load(Path("/nonexistent"), False)
    assert raw.train_x.shape == (1797, 1, 8, 8)
    assert raw.train_x.dtype == torch.uint8
    assert int(raw.train_x.max()) == 255
    assert raw.num_classes == 10
    assert raw.test_x is None
