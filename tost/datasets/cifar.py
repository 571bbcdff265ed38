"""CIFAR-10 / CIFAR-100 through torchvision's own download code and md5 checksums.

The archive URL, file names and checksums are read from torchvision's dataset classes at call time,
so they are torchvision's, not ours. Only batch files whose md5 matches are unpickled: the CIFAR
format is a Python pickle, and a checksum-verified file is the official one.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch
from torchvision.datasets import CIFAR10, CIFAR100
from torchvision.datasets.utils import check_integrity, download_and_extract_archive

from tost.datasets.base import RawDataset
from tost.errors import DataError


def _where(cls: type[CIFAR10], root: Path) -> str:
    return (
        f"download {cls.url} and place {cls.filename} at {root / cls.filename} "
        f"(or its extracted folder at {root / cls.base_folder})"
    )


def _files(cls: type[CIFAR10]) -> list[tuple[str, str]]:
    return [*cls.train_list, *cls.test_list, (cls.meta["filename"], cls.meta["md5"])]


def _intact(cls: type[CIFAR10], root: Path) -> bool:
    return all(check_integrity(str(root / cls.base_folder / f), md5) for f, md5 in _files(cls))


def ensure_files(cls: type[CIFAR10], root: Path, download: bool) -> None:
    """Make sure every batch file is present and matches its md5, downloading when allowed."""
    if _intact(cls, root):
        return
    if download:
        try:
            download_and_extract_archive(cls.url, str(root), filename=cls.filename, md5=cls.tgz_md5)
        except (OSError, RuntimeError) as err:  # URLError is an OSError; torchvision raises RuntimeError too
            raise DataError(f"{cls.filename}: download failed ({err}); {_where(cls, root)}") from None
    for f, md5 in _files(cls):
        path = root / cls.base_folder / f
        if not path.is_file():
            raise DataError(f"{path}: missing and data.download is false; {_where(cls, root)}")
        if not check_integrity(str(path), md5):
            raise DataError(
                f"{path}: corrupted (md5 checksum mismatch); delete it and download {cls.filename} again"
            )


def _read(path: Path, label_key: str) -> tuple[torch.Tensor, torch.Tensor]:
    with open(path, "rb") as fh:
        entry = pickle.load(fh, encoding="bytes")  # checksum-verified official file, see module docstring
    data = entry.get(b"data", entry.get("data"))
    labels = entry.get(label_key.encode(), entry.get(label_key))
    x = torch.from_numpy(np.asarray(data, dtype=np.uint8).reshape(-1, 3, 32, 32).copy())
    return x, torch.as_tensor(list(labels), dtype=torch.int64)


def _load(cls: type[CIFAR10], root: Path, download: bool, label_key: str, classes: int) -> RawDataset:
    ensure_files(cls, root, download)
    folder = root / cls.base_folder
    train = [_read(folder / f, label_key) for f, _ in cls.train_list]
    test_x, test_y = _read(folder / cls.test_list[0][0], label_key)
    return RawDataset(
        train_x=torch.cat([x for x, _ in train]),
        train_y=torch.cat([y for _, y in train]),
        test_x=test_x,
        test_y=test_y,
        num_classes=classes,
    )


def load_cifar10(root: Path, download: bool) -> RawDataset:
    """CIFAR-10: 50,000 train and 10,000 test 32×32 colour images of 10 classes."""
    return _load(CIFAR10, Path(root), download, "labels", 10)


def load_cifar100(root: Path, download: bool) -> RawDataset:
    """CIFAR-100 (fine labels): 50,000 train and 10,000 test images of 100 classes."""
    return _load(CIFAR100, Path(root), download, "fine_labels", 100)
