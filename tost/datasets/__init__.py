"""Dataset registry: name → a loader that returns the raw train and test splits as uint8 tensors.

A loader knows where its files come from (a package, or torchvision's checked download) and nothing
about validation splits or augmentation, which `tost.datasets.split` handles the same way for all.
Loaders that need torchvision's dataset code import their module when called: validating a params
file, or starting a stage that reads prepared data, must not pay for importing torchvision.datasets.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tost.datasets import digits
from tost.datasets.base import RawDataset

Loader = Callable[[Path, bool], RawDataset]


def cifar10(root: Path, download: bool) -> RawDataset:
    """CIFAR-10 (tost.datasets.cifar)."""
    from tost.datasets import cifar

    return cifar.load_cifar10(root, download)


def cifar100(root: Path, download: bool) -> RawDataset:
    """CIFAR-100 (tost.datasets.cifar)."""
    from tost.datasets import cifar

    return cifar.load_cifar100(root, download)


def fashion_mnist(root: Path, download: bool) -> RawDataset:
    """Fashion-MNIST (tost.datasets.fashion)."""
    from tost.datasets import fashion

    return fashion.load(root, download)


DATASETS: dict[str, Loader] = {
    "digits": digits.load,
    "fashion_mnist": fashion_mnist,
    "cifar10": cifar10,
    "cifar100": cifar100,
}
