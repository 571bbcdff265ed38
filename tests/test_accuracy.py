"""The embedded default learns for real: a dense network reaches ≥ 95 % test accuracy on digits."""

from __future__ import annotations

from pathlib import Path

import torch

from tests.conftest import fit
from tost import config, data, models
from tost.runtime import Runtime
from tost.sparsity.mask import Mask, prunable


def test_dense_default_model_reaches_95_percent_on_digits(raw_params):
    p = config.parse(raw_params)  # the repository's own settings, with sparsity 0 (dense)
    prepared = data.prepare(
        p.data.name, Path(p.data.root), False, p.data.val_fraction, p.data.test_fraction, 0
    )
    torch.manual_seed(p.seed)
    net = models.build(p.model.arch, prepared.num_classes, prepared.shape, p.model.width)
    dense = Mask.ones(prunable(net, p.prune.include_first, p.prune.include_last))
    res = fit(net, dense, prepared, p.data, p.train, [], Runtime.cpu(), p.seed)
    assert res.summary["sparsity"] < 0.01
    assert res.summary["final_test_acc"] >= 95.0
    assert res.summary["test_acc"] >= 95.0
