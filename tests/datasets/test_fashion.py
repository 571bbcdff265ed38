"""Fashion-MNIST through torchvision's IDX reader, on small fake files in the real IDX/gzip format."""

from __future__ import annotations

import gzip
import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import offline
from tests.datasets.files import idx, prep
from tost.datasets import fashion
from tost.errors import DataError


@pytest.fixture
def fake(tmp_path, monkeypatch):
    """Four small files in the real format in data.root, with their IDX md5s; no Debian copy visible."""
    rng = np.random.default_rng(0)
    arrays = {
        "train-images-idx3-ubyte.gz": rng.integers(0, 256, (40, 28, 28)),
        "train-labels-idx1-ubyte.gz": np.arange(40) % 10,
        "t10k-images-idx3-ubyte.gz": rng.integers(0, 256, (20, 28, 28)),
        "t10k-labels-idx1-ubyte.gz": np.arange(20) % 10,
    }
    md5 = {}
    for name, array in arrays.items():
        data = idx(array)
        (tmp_path / name).write_bytes(gzip.compress(data))
        md5[name] = hashlib.md5(data).hexdigest()
    monkeypatch.setattr(fashion, "IDX_MD5", md5)
    monkeypatch.setattr(fashion, "DEBIAN", tmp_path / "not-installed")
    return tmp_path, arrays


def test_good_files_read_pixel_exact(fake):
    root, arrays = fake
    raw = fashion.load(root, False)
    assert raw.train_x.shape == (40, 1, 28, 28) and raw.train_x.dtype == torch.uint8
    assert np.array_equal(raw.train_x[:, 0].numpy(), arrays["train-images-idx3-ubyte.gz"])
    assert (
        raw.test_y.tolist() == arrays["t10k-labels-idx1-ubyte.gz"].tolist()
        and raw.test_y.dtype == torch.int64
    )
    assert raw.num_classes == 10
    assert sorted(p.name for p in root.iterdir() if p.is_file()) == sorted(
        arrays
    )  # nothing written to data.root


def test_torchvisions_layout_under_data_root_is_found(fake):
    root, _ = fake
    (root / "FashionMNIST" / "raw").mkdir(parents=True)
    for f in list(root.glob("*.gz")):
        f.rename(root / "FashionMNIST" / "raw" / f.name)
    assert fashion.load(root, False).train_x.shape[0] == 40


def _one_line(err: pytest.ExceptionInfo) -> str:
    msg = str(err.value)
    assert "\n" not in msg
    return msg


def test_a_truncated_file_is_one_clear_line(fake):
    root, _ = fake
    victim = root / "train-images-idx3-ubyte.gz"
    victim.write_bytes(victim.read_bytes()[:200])
    with pytest.raises(DataError) as err:
        fashion.load(root, False)
    assert f"{victim}: truncated or not a gzip file" in _one_line(err)


def test_a_bad_checksum_is_one_clear_line(fake):
    root, arrays = fake
    changed = arrays["t10k-labels-idx1-ubyte.gz"].copy()
    changed[0] = 9
    (root / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx(changed)))
    with pytest.raises(DataError) as err:
        fashion.load(root, False)
    assert "t10k-labels-idx1-ubyte.gz: checksum mismatch" in _one_line(err)


def test_a_missing_file_says_how_to_get_it(fake):
    root, _ = fake
    (root / "train-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError) as err:
        fashion.load(root, False)
    msg = _one_line(err)
    assert "train-labels-idx1-ubyte.gz not found" in msg and "make fashion" in msg and str(root) in msg


def test_a_missing_file_without_network_says_how_to_get_it(fake, monkeypatch):
    root, _ = fake
    (root / "t10k-images-idx3-ubyte.gz").unlink()

    monkeypatch.setattr("torchvision.datasets.utils.download_url", offline)
    with pytest.raises(DataError) as err:
        fashion.load(root, True)
    msg = _one_line(err)
    assert "t10k-images-idx3-ubyte.gz: download failed" in msg and "make fashion" in msg


def test_prepare_keeps_the_official_test_split_and_subsets_train(fake):
    root, _ = fake
    p = prep("fashion_mnist", root, subset=20)
    assert len(p.test.y) == 20 and len(p.train.y) + len(p.val.y) == 20 and p.shape == (1, 28, 28)


@pytest.mark.skipif(
    not (fashion.DEBIAN / fashion.FILES[0]).is_file(), reason="dataset-fashion-mnist not installed"
)
def test_the_debian_package_is_the_real_data_set():
    raw = fashion.load(Path("/nonexistent"), False)
    assert raw.train_x.shape == (60_000, 1, 28, 28) and raw.test_x.shape == (10_000, 1, 28, 28)
    assert torch.bincount(raw.train_y).tolist() == [6000] * 10
    assert raw.train_y[:5].tolist() == [9, 0, 0, 3, 0] and raw.test_y[:5].tolist() == [9, 2, 1, 1, 6]
