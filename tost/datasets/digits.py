"""scikit-learn's handwritten digits: 1,797 8×8 grey images of 10 classes, shipped inside the package.

It is the embedded default because it needs no network and trains in seconds on a CPU, yet is hard
enough that a 90 %-sparse ResNet visibly loses accuracy against a dense one.
"""

from __future__ import annotations

from pathlib import Path

import torch

from tost.datasets.base import RawDataset


def load(root: Path, download: bool) -> RawDataset:
    """All images as the train split (no official test split); 0..16 grey levels scaled to 0..255."""
    from sklearn.datasets import load_digits  # here: only the data stage pays its 2 s import

    bunch = load_digits()
    images = torch.as_tensor(bunch.images, dtype=torch.float64)
    x = torch.round(images * 255.0 / 16.0).to(torch.uint8).unsqueeze(1)
    y = torch.as_tensor(bunch.target, dtype=torch.int64)
    return RawDataset(train_x=x, train_y=y, test_x=None, test_y=None, num_classes=10)
