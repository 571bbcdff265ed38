"""A dataset → the prepared splits: seeded, and the same seed always gives the same splits.

Splits are carved with seeded permutations: a test split only for datasets that have no official
one (digits), then `val_fraction` of the remaining training images for model selection.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch

from tost.data import Prepared, Split
from tost.datasets import DATASETS
from tost.errors import DataError

if TYPE_CHECKING:  # config imports the dataset registry for its names
    from tost.config import DataConfig


def _carve(x: torch.Tensor, y: torch.Tensor, fraction: float, seed: int, key: str) -> tuple[Split, Split]:
    """Split off round(fraction × N) images at random; both parts must be non-empty."""
    n = len(y)
    k = round(fraction * n)
    if k < 1 or k >= n:
        raise DataError(
            f"data.{key}={fraction} holds out {k} of {n} images, leaving an empty split; "
            f"choose a value between {1 / n:.4f} and {1 - 1 / n:.4f}"
        )
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    held, rest = perm[:k].sort().values, perm[k:].sort().values
    return Split(x[rest], y[rest]), Split(x[held], y[held])


def channel_stats(x: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std in [0, 1] units, for normalisation."""
    v = x.double().div(255.0).transpose(0, 1).reshape(x.shape[1], -1)
    return tuple(float(m) for m in v.mean(1)), tuple(max(float(s), 1e-6) for s in v.std(1))


def balanced_subset(split: Split, n: int, seed: int) -> Split:
    """A seeded subset of `n` images, every class equally represented, in the split's own order.

    When n is not a multiple of the C classes, the first n mod C classes get one image more.
    """
    classes = torch.unique(split.y).tolist()
    per, extra = divmod(n, len(classes))
    g = torch.Generator().manual_seed(seed)
    picked = []
    for i, c in enumerate(classes):
        idx = (split.y == c).nonzero().squeeze(1)
        want = per + (i < extra)
        if want > len(idx):
            raise DataError(
                f"data.train_subset={n} needs {want} images of class {c}, which has {len(idx)}; lower it"
            )
        picked.append(idx[torch.randperm(len(idx), generator=g)[:want]])
    keep = torch.cat(picked).sort().values
    return Split(split.x[keep], split.y[keep])


def prepare(cfg: DataConfig, seed: int) -> Prepared:
    """Load dataset `cfg.name` and split it; the same seed always gives the same splits.

    Without an official test split one is carved first (`test_fraction`); then, with `train_subset`,
    a class-balanced subset of the training images is kept; then `val_fraction` of what remains is
    held out for model selection.
    """
    if cfg.name not in DATASETS:
        raise DataError(f"data.name: unknown dataset {cfg.name!r}; choose one of {', '.join(DATASETS)}")
    raw = DATASETS[cfg.name](Path(cfg.root), cfg.download)
    if raw.test_x is None or raw.test_y is None:
        trainval, test = _carve(raw.train_x, raw.train_y, cfg.test_fraction, seed, "test_fraction")
    else:
        trainval, test = Split(raw.train_x, raw.train_y), Split(raw.test_x, raw.test_y)
    if cfg.train_subset:
        if cfg.train_subset > len(trainval.y):
            n = len(trainval.y)
            raise DataError(
                f"data.train_subset={cfg.train_subset} is more than the {n} training images; lower it"
            )
        trainval = balanced_subset(trainval, cfg.train_subset, seed + 2)
    train, val = _carve(trainval.x, trainval.y, cfg.val_fraction, seed + 1, "val_fraction")
    mean, std = channel_stats(train.x)
    return Prepared(train=train, val=val, test=test, num_classes=raw.num_classes, mean=mean, std=std)
