"""The analyze stage measures the network the train stage returned, tricks kept to the end included."""

from __future__ import annotations

import json

import pytest
import yaml

from stages import analyze as analyze_stage
from tests.conftest import repo_params, tiny_prepared, variant_trainer
from tests.params_helpers import TO_THE_END
from tost import analysis, config, data, tricks
from tost.io import save_tensors
from tost.loader import eval_loaders
from tost.runtime import Runtime


@pytest.mark.parametrize("variant", ["baseline", "tost"])
def test_analyze_restores_kept_tricks_and_measures_the_trained_network(tmp_path, monkeypatch, variant):
    raw = repo_params()
    raw["model"].update(arch="resnet20", width=4)
    raw["train"]["device"] = "cpu"
    for name, window in TO_THE_END.items():
        raw["tricks"][name].update(window)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    p = config.parse(raw)
    data.save_prepared(tiny_prepared(), tmp_path / "data")
    trainer = variant_trainer(variant, variant, tricks=TO_THE_END, epochs=1, batch_size=32)
    result = trainer.fit()
    kept = tricks.kept(variant, trainer.tricks)
    assert bool(kept) == (variant == "tost")  # soft activations and jumps stay in the network
    state = {k: v.detach() for k, v in result.model.state_dict().items()}
    save_tensors(tmp_path / "ckpt.pt", {"format": "tost-checkpoint/1", "arch": "resnet20", "width": 4,
                                        "kept": kept, "variant": variant, "state_dict": state})  # fmt: skip
    monkeypatch.chdir(tmp_path)
    analyze_stage.main([variant, "--data", "data", "--ckpt", "ckpt.pt", "--metrics", "m.json",
                        "--detail", "d.json", "--plot", "hist.png"])  # fmt: skip

    _, test = eval_loaders(data.load_prepared(tmp_path / "data"), p.train.eval_batch_size, Runtime.cpu())
    want, _ = analysis.activation_stats(
        result.model, test, p.analysis.batches, p.analysis.near_zero, Runtime.cpu()
    )
    record = json.loads((tmp_path / "d.json").read_text())
    assert record["layers"] == json.loads(json.dumps(want))  # every site, every number: the same network
    assert (tmp_path / "hist.png").stat().st_size > 0
