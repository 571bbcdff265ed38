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


def test_test_accuracy_by_epoch_has_a_column_per_variant():
    import pandas as pd

    curves = {
        "baseline": pd.DataFrame({"epoch": [1, 2], "test_acc": [50.0, 60.0], "val_acc": [1.0, 2.0]}),
        "tost": pd.DataFrame(
            {"epoch": [1, 2, 3], "test_acc": [55.0, 65.0, 70.0], "val_acc": [1.0, 2.0, 3.0]}
        ),
    }
    wide = report.test_acc_by_epoch(curves)
    assert list(wide.columns) == ["epoch", "baseline", "tost"]
    assert list(wide["epoch"]) == [1, 2, 3] and list(wide["tost"]) == [55.0, 65.0, 70.0]
    assert wide["baseline"].isna().tolist() == [False, False, True]


def test_dead_activations_by_layer_in_network_order(tmp_path):
    layers = {"act1": {"zero_fraction": 0.5}, "layers.0.0.act1": {"zero_fraction": 0.25}}
    _write(tmp_path / "baseline.json", {"layers": layers})
    _write(tmp_path / "tost.json", {"layers": {"act1": {"zero_fraction": 0.125}}})
    df = report.dead_by_layer(["baseline", "tost", "absent"], tmp_path)
    assert list(df.columns) == ["index", "layer", "baseline", "tost", "absent"]
    assert list(df["layer"]) == ["act1", "layers.0.0.act1"] and list(df["index"]) == [0, 1]
    assert df["baseline"].tolist() == [0.5, 0.25] and df["tost"].tolist()[0] == 0.125
    assert df["tost"].isna().tolist() == [False, True] and df["absent"].isna().all()


def test_kept_by_layer_is_the_masks_shape_in_layer_order():
    record = {
        "kept_per_layer": {"conv1.weight": 3, "fc.weight": 0},
        "size_per_layer": {"conv1.weight": 12, "fc.weight": 8},
    }
    df = report.kept_by_layer(record)
    assert df.to_dict("records") == [
        {"index": 0, "layer": "conv1.weight", "kept": 3, "total": 12, "kept_fraction": 0.25},
        {"index": 1, "layer": "fc.weight", "kept": 0, "total": 8, "kept_fraction": 0.0},  # an empty layer
    ]


def test_publish_copies_the_records_of_the_listed_variants(tmp_path):
    records, detail, curves = tmp_path / "records", tmp_path / "detail", tmp_path / "curves"
    for name in ("data.json", "dense.json", "mask.json", "train/tost.json", "train/old.json"):
        _write(records / name, {"name": name})
    (records / "curves").mkdir()
    (records / "curves" / "tost.csv").write_text("epoch,test_acc\n1,50\n")
    report.publish(records, detail, curves, ["tost"])
    copied = sorted(str(p.relative_to(detail)) for p in detail.rglob("*.json"))
    assert copied == ["data.json", "dense.json", "mask.json", "train/tost.json"]  # no analysis: skipped
    assert json.loads((detail / "train" / "tost.json").read_text()) == {"name": "train/tost.json"}
    assert (curves / "tost.csv").read_text() == "epoch,test_acc\n1,50\n"
