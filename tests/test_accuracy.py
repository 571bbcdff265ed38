"""The default setting learns: the dense stage's network reaches 95 % on digits."""

from __future__ import annotations

from tost import config, dense
from tost.datasets.split import prepare
from tost.runtime import Runtime


def test_dense_default_model_reaches_95_percent_on_digits(raw_params):
    p = config.parse(raw_params)  # the repository's own settings: dense.epochs of the train settings
    prepared = prepare(p.data, p.seed)
    res = dense.fit(p, prepared, dense.initial(p, prepared), Runtime.cpu())
    assert res.summary["sparsity"] < 0.01 and res.summary["epochs"] == p.dense.epochs
    assert res.summary["final_test_acc"] >= 95.0
    assert res.summary["test_acc"] >= 95.0
