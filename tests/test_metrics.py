"""Headline metrics for DVC and the full record beside them."""

from __future__ import annotations

import json

import pytest

from tost import metrics
from tost.summary import summarize


def test_headline_keeps_the_listed_keys_in_order_and_counts_lists():
    record = {"sparsity": 0.9, "method": "snip", "per_layer": {"a": 1.0}, "empty_layers": ["a", "b"]}
    assert metrics.headline(record, ("method", "empty_layers", "missing", "sparsity")) == {
        "method": "snip",
        "empty_layers": 2,
        "sparsity": 0.9,
    }


def test_write_puts_the_whole_record_in_detail_and_the_headline_in_metrics(tmp_path):
    record = {"variant": "tost", "test_acc": 91.5, "final_train_loss": 0.1, "lrsi_iters": 30}
    metrics.write(record, metrics.TRAIN, tmp_path / "m.json", tmp_path / "d" / "detail.json")
    assert json.loads((tmp_path / "d" / "detail.json").read_text()) == record
    assert json.loads((tmp_path / "m.json").read_text()) == {"test_acc": 91.5}


def test_every_train_and_dense_headline_key_is_in_what_training_reports():
    history = [{"epoch": 1, "val_acc": 50.0, "test_acc": 60.0, "train_loss": 1.0}]
    summary = summarize(
        history, sparsity=0.9, mask_sparsity=0.9, images_per_epoch=10, train_time=1.0, device="cpu"
    )
    summary.update(weights_trained=10, weights_evaluated=10)  # what Trainer.finish adds
    summary.update(diverged_epoch=2, diverged_step=1)  # and, after `on_divergence: stop`, this
    assert set(metrics.TRAIN) <= set(summary)
    assert set(metrics.DENSE) <= set(summary)


@pytest.mark.parametrize("keys", [metrics.TRAIN, metrics.DENSE, metrics.MASK, metrics.ANALYSIS, metrics.DATA])
def test_headlines_stay_short(keys):
    assert len(keys) <= 10  # six variants x ten, plus mask, dense and data, keep `dvc exp show` under 250


def test_the_analysis_headline_is_in_its_summary():
    from tost.analysis import summary

    stats = {"a": {"zero_fraction": 0.5, "near_zero_fraction": 0.6}}
    assert set(metrics.ANALYSIS) <= set(summary(stats))
