"""The prepared-data format: what the data stage saves is what every later stage loads, bit for bit."""

from __future__ import annotations

import pytest
import torch

from tests.datasets.files import prep
from tost import data
from tost.errors import DataError


def test_save_load_round_trip_is_bit_identical(tmp_path):
    p = prep()
    meta = data.save_prepared(p, tmp_path)
    back = data.load_prepared(tmp_path)
    for name in data.SPLITS:
        assert torch.equal(getattr(back, name).x, getattr(p, name).x)
        assert torch.equal(getattr(back, name).y, getattr(p, name).y)
    assert meta["sizes"] == {"train": len(p.train.y), "val": len(p.val.y), "test": len(p.test.y)}
    assert back.mean == p.mean and back.num_classes == 10


def test_missing_prepared_data_says_to_run_the_data_stage(tmp_path):
    with pytest.raises(DataError, match="dvc repro data"):
        data.load_prepared(tmp_path / "nothing")
