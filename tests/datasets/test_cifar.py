"""CIFAR through torchvision's own code, on small fake files in the real format."""

from __future__ import annotations

import hashlib
import pickle
from pathlib import Path

import numpy as np
import pytest
from torchvision.datasets import CIFAR10, CIFAR100

import tost.datasets.cifar as cifar
from tests.conftest import offline
from tests.datasets.files import prep
from tost.errors import DataError


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def _write_batch(path: Path, images: np.ndarray, labels: list[int], label_key: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump({b"data": images.reshape(len(labels), -1), label_key.encode(): labels}, f)


def fake_cifar(root: Path, cls, monkeypatch, label_key: str, classes: int, per_file: int = 3):
    """Write tiny batch files with CIFAR's layout and point torchvision's checksums at them."""
    rng = np.random.default_rng(0)
    folder = root / cls.base_folder
    written = {}
    for name, _ in [*cls.train_list, *cls.test_list]:
        imgs = rng.integers(0, 256, size=(per_file, 3, 32, 32), dtype=np.uint8)
        labels = rng.integers(0, classes, size=per_file).tolist()
        _write_batch(folder / name, imgs, labels, label_key)
        written[name] = (imgs, labels)
    meta_path = folder / cls.meta["filename"]
    with open(meta_path, "wb") as f:
        pickle.dump({b"label_names": [b"x"] * classes}, f)
    monkeypatch.setattr(cls, "train_list", [[n, _md5(folder / n)] for n, _ in cls.train_list])
    monkeypatch.setattr(cls, "test_list", [[n, _md5(folder / n)] for n, _ in cls.test_list])
    monkeypatch.setattr(cls, "meta", {**cls.meta, "md5": _md5(meta_path)})
    return written


@pytest.mark.parametrize(
    ("cls", "loader", "key", "classes"),
    [(CIFAR10, cifar.load_cifar10, "labels", 10), (CIFAR100, cifar.load_cifar100, "fine_labels", 100)],
)
def test_cifar_reads_the_real_format_pixel_exact(tmp_path, monkeypatch, cls, loader, key, classes):
    written = fake_cifar(tmp_path, cls, monkeypatch, key, classes)
    raw = loader(tmp_path, False)
    train_imgs = np.concatenate([written[n][0] for n, _ in cls.train_list])
    assert raw.train_x.shape == (len(train_imgs), 3, 32, 32)
    assert np.array_equal(raw.train_x.numpy(), train_imgs)  # rows are 1024 R, then G, then B values
    assert raw.train_y.tolist() == [lab for n, _ in cls.train_list for lab in written[n][1]]
    assert np.array_equal(raw.test_x.numpy(), written[cls.test_list[0][0]][0])
    assert raw.num_classes == classes


def test_cifar_missing_without_network_names_file_and_place(tmp_path, monkeypatch):
    monkeypatch.setattr(cifar, "download_and_extract_archive", offline)
    with pytest.raises(DataError) as err:
        cifar.load_cifar10(tmp_path, True)
    msg = str(err.value)
    assert "cifar-10-python.tar.gz" in msg
    assert str(tmp_path) in msg
    assert "\n" not in msg


def test_cifar_missing_with_download_off(tmp_path):
    with pytest.raises(DataError, match="data.download is false"):
        cifar.load_cifar10(tmp_path, False)


def test_cifar_corrupted_file_fails_its_checksum(tmp_path, monkeypatch):
    fake_cifar(tmp_path, CIFAR10, monkeypatch, "labels", 10)
    victim = tmp_path / CIFAR10.base_folder / "data_batch_3"
    raw = bytearray(victim.read_bytes())
    raw[100] ^= 0xFF
    victim.write_bytes(bytes(raw))
    monkeypatch.setattr(cifar, "download_and_extract_archive", lambda *a, **k: None)
    with pytest.raises(DataError, match=r"data_batch_3: corrupted \(md5 checksum mismatch\)"):
        cifar.load_cifar10(tmp_path, True)


def test_prepare_cifar_uses_the_official_test_split(tmp_path, monkeypatch):
    fake_cifar(tmp_path, CIFAR10, monkeypatch, "labels", 10, per_file=10)
    p = prep("cifar10", tmp_path)
    assert len(p.test.y) == 10  # the official test batch, untouched by test_fraction
    assert len(p.val.y) == 5 and len(p.train.y) == 45
    assert p.shape == (3, 32, 32)
