"""DVCLive: the training stages log each epoch where `dvc exp show` finds a running experiment's metrics."""

from __future__ import annotations

import json
from types import SimpleNamespace

from stages._live import LIVE, live


def _trainer(epoch: int, val: float, eta: float) -> SimpleNamespace:
    return SimpleNamespace(history=[{"epoch": epoch, "val_acc": val}], eta=lambda: eta)


def test_each_epoch_rewrites_the_live_file_with_unique_short_keys(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = LIVE / "train" / "tost" / "metrics.json"
    with live("train/tost") as epoch_end:
        epoch_end(_trainer(1, 10.123, 90.4))
        assert json.loads(path.read_text()) == {
            "live": {"tost": {"epoch": 1, "val_acc": 10.12, "eta_s": 90}},
            "step": 1,
        }
        epoch_end(_trainer(2, 55.5, 45.0))
    assert json.loads(path.read_text())["live"]["tost"] == {"epoch": 2, "val_acc": 55.5, "eta_s": 45}
    assert sorted(p.name for p in path.parent.rglob("*")) == ["metrics.json"]  # no plots, report, dvc.yaml


def test_a_rank_that_does_not_write_logs_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with live("dense", writes=False) as epoch_end:
        epoch_end(_trainer(1, 10.0, 1.0))
    assert not LIVE.exists()
