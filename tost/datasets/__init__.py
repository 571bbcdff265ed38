"""Dataset registry: name → a loader that returns the raw train and test splits as uint8 tensors.

A loader knows where its files come from (a package, or torchvision's download with checksums)
and nothing about validation splits or augmentation, which `tost.data` handles the same way for all.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tost.datasets import cifar, digits
from tost.datasets.base import RawDataset

Loader = Callable[[Path, bool], RawDataset]

DATASETS: dict[str, Loader] = {
    "digits": digits.load,
    "cifar10": cifar.load_cifar10,
    "cifar100": cifar.load_cifar100,
}
