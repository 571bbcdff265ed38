"""Prepared data: the uint8 train/val/test splits the data stage saves and every later stage loads.

Images stay uint8 until a batch is built on the device, which keeps the artifacts small and the
whole CIFAR training set resident on a GPU. How the splits are made from a dataset is
`tost.datasets.split`; this module is only their format, so that the stages that read them do not
depend on the dataset loaders.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from tost.errors import DataError, TostError
from tost.io import atomic_dir, load_tensors, read_json, save_tensors, write_json

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


def _digest(s: Split) -> str:
    h = hashlib.sha256(s.x.contiguous().numpy().tobytes())
    h.update(s.y.contiguous().numpy().tobytes())
    return h.hexdigest()


def save_prepared(p: Prepared, out_dir: Path) -> dict[str, Any]:
    """Write one tensor file per split plus meta.json, all or nothing; returns the meta (the data metrics).

    The files are written into a new folder that then replaces `out_dir` whole (`atomic_dir`), so a
    failure in any of them leaves the previous prepared data as it was.
    """
    splits = {"train": p.train, "val": p.val, "test": p.test}
    meta = {
        "num_classes": p.num_classes,
        "shape": list(p.shape),
        "mean": list(p.mean),
        "std": list(p.std),
        "sizes": {k: len(s.y) for k, s in splits.items()},
        "sha256": {k: _digest(s) for k, s in splits.items()},
    }
    with atomic_dir(out_dir) as tmp:
        for name, s in splits.items():
            save_tensors(tmp / f"{name}.pt", {"x": s.x, "y": s.y})
        write_json(tmp / "meta.json", meta)
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
    meta = read_json(meta_path)
    try:
        num_classes = int(meta["num_classes"])
        mean, std = tuple(float(m) for m in meta["mean"]), tuple(float(s) for s in meta["std"])
    except (KeyError, TypeError, ValueError) as err:
        raise DataError(
            f"{meta_path}: not the prepared data's meta ({err!r}); run `dvc repro data`"
        ) from None
    splits = {k: _load_split(out_dir / f"{k}.pt") for k in SPLITS}
    recorded = meta.get("sha256") or {}
    for name, split in splits.items():  # a flipped bit in the numbers loads fine: the checksum sees it
        if name in recorded and recorded[name] != _digest(split):
            raise DataError(
                f"{out_dir / f'{name}.pt'}: does not match its checksum in meta.json (damaged?); "
                "run `dvc repro data`"
            )
    return Prepared(
        train=splits["train"],
        val=splits["val"],
        test=splits["test"],
        num_classes=num_classes,
        mean=mean,
        std=std,
    )
