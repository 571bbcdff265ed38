"""Datasets → prepared uint8 splits (train/val/test), saved once by the data stage.

Splits are carved with seeded permutations: a test split only for datasets that have no official
one (digits), then `val_fraction` of the remaining training images for model selection. Images stay
uint8 until a batch is built on the device, which keeps the artifacts small and the whole CIFAR
training set resident on a GPU.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from tost.datasets import DATASETS
from tost.errors import DataError, TostError
from tost.io import load_tensors, save_tensors, write_json

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class Split:
    """Images uint8 [N, C, H, W] and labels int64 [N]."""

    x: torch.Tensor
    y: torch.Tensor


@dataclass(frozen=True)
class Prepared:
    """The three splits plus what training needs to know about them."""

    train: Split
    val: Split
    test: Split
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @property
    def shape(self) -> tuple[int, int, int]:
        c, h, w = self.train.x.shape[1:]
        return int(c), int(h), int(w)

    @property
    def in_channels(self) -> int:
        return self.shape[0]


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


def prepare(
    name: str, root: Path, download: bool, val_fraction: float, test_fraction: float, seed: int
) -> Prepared:
    """Load dataset `name` and split it; the same seed always gives the same split."""
    if name not in DATASETS:
        raise DataError(f"data.name: unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    raw = DATASETS[name](Path(root), download)
    if raw.test_x is None or raw.test_y is None:
        trainval, test = _carve(raw.train_x, raw.train_y, test_fraction, seed, "test_fraction")
    else:
        trainval, test = Split(raw.train_x, raw.train_y), Split(raw.test_x, raw.test_y)
    train, val = _carve(trainval.x, trainval.y, val_fraction, seed + 1, "val_fraction")
    mean, std = channel_stats(train.x)
    return Prepared(train=train, val=val, test=test, num_classes=raw.num_classes, mean=mean, std=std)


def _digest(s: Split) -> str:
    h = hashlib.sha256(s.x.contiguous().numpy().tobytes())
    h.update(s.y.contiguous().numpy().tobytes())
    return h.hexdigest()


def save_prepared(p: Prepared, out_dir: Path) -> dict[str, Any]:
    """Write one tensor file per split plus meta.json; returns the meta (also the data metrics)."""
    out_dir = Path(out_dir)
    splits = {"train": p.train, "val": p.val, "test": p.test}
    for name, s in splits.items():
        save_tensors(out_dir / f"{name}.pt", {"x": s.x, "y": s.y})
    meta = {
        "num_classes": p.num_classes,
        "shape": list(p.shape),
        "mean": list(p.mean),
        "std": list(p.std),
        "sizes": {k: len(s.y) for k, s in splits.items()},
        "sha256": {k: _digest(s) for k, s in splits.items()},
    }
    write_json(out_dir / "meta.json", meta)
    return meta


def _load_split(path: Path) -> Split:
    try:
        obj = load_tensors(path)
    except TostError as err:
        raise DataError(f"{err}; run `dvc repro data` to rebuild the prepared data") from None
    x, y = obj.get("x") if isinstance(obj, dict) else None, obj.get("y") if isinstance(obj, dict) else None
    if not isinstance(x, torch.Tensor) or x.dtype != torch.uint8 or x.dim() != 4:
        raise DataError(f"{path}: expected uint8 images [N, C, H, W]; run `dvc repro data`")
    if not isinstance(y, torch.Tensor) or y.dtype != torch.int64 or y.shape != (x.shape[0],):
        raise DataError(f"{path}: expected int64 labels [N] matching the images; run `dvc repro data`")
    return Split(x, y)


def load_prepared(out_dir: Path) -> Prepared:
    """Read what `save_prepared` wrote, checking dtypes and shapes."""
    out_dir = Path(out_dir)
    meta_path = out_dir / "meta.json"
    if not meta_path.is_file():
        raise DataError(f"{meta_path}: prepared data not found; run `dvc repro data`")
    from tost.io import read_json

    meta = read_json(meta_path)
    splits = {k: _load_split(out_dir / f"{k}.pt") for k in SPLITS}
    return Prepared(
        train=splits["train"],
        val=splits["val"],
        test=splits["test"],
        num_classes=int(meta["num_classes"]),
        mean=tuple(meta["mean"]),
        std=tuple(meta["std"]),
    )
