"""The per-pipeline report: the dense reference row, the variants, and the layer-collapse note."""

from __future__ import annotations

import json

from tost import report


def _write(path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))


def _metrics(tmp_path, empty=(), dense_acc=True):
    _write(
        tmp_path / "mask.json", {"method": "snip", "requested_sparsity": 0.98, "empty_layers": list(empty)}
    )
    for v, acc in (("baseline", 90.0), ("tost", 91.0)):
        _write(tmp_path / "train" / f"{v}.json", {"test_acc": acc, "sparsity": 0.98, "epochs": 3})
    dense = {"epochs": 3, "test_acc": 97.5, "sparsity": 0.0} if dense_acc else {"epochs": 0}
    _write(tmp_path / "dense.json", dense)


def test_the_dense_network_is_the_first_row_when_it_was_trained(tmp_path):
    _metrics(tmp_path)
    df = report.results_table(["baseline", "tost"], tmp_path / "mask.json", tmp_path / "train",
                              tmp_path / "analysis", tmp_path / "dense.json")  # fmt: skip
    assert list(df.variant) == ["dense", "baseline", "tost"]
    dense = df.iloc[0]
    assert dense.test_acc == 97.5 and dense.sparsity == 0.0 and dense.requested_sparsity == 0.0


def test_no_dense_row_without_dense_training(tmp_path):
    _metrics(tmp_path, dense_acc=False)
    df = report.results_table(["baseline", "tost"], tmp_path / "mask.json", tmp_path / "train",
                              tmp_path / "analysis", tmp_path / "dense.json")  # fmt: skip
    assert list(df.variant) == ["baseline", "tost"]


def test_layer_collapse_is_noted(tmp_path):
    _metrics(tmp_path, empty=["layers.1.0.conv2.weight"])
    (note,) = report.collapse_note(tmp_path / "mask.json")
    assert "empties 1 layer(s) (layers.1.0.conv2.weight)" in note
    _metrics(tmp_path)
    assert report.collapse_note(tmp_path / "mask.json") == []
