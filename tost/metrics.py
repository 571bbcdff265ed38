"""Each stage's record in two files: headline numbers that DVC compares, and the full detail.

`dvc exp show` gives every number of every `metrics:` file a column and `dvc metrics diff` a row, so
per-layer statistics and bookkeeping made both unreadable (919 columns, 565 rows). A stage therefore
writes its whole record as JSON to a cached out under artifacts/records/ (the report copies it into
git as metrics/detail/) and only the numbers one compares across experiments to its `metrics:` file.
The headline is a subset of the detail, never a different computation, so the two can not disagree.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

from tost.io import write_json

# What a researcher compares between experiments; everything else stays in the detail file.
TRAIN = (
    "test_acc",
    "final_test_acc",
    "best_val_acc",
    "best_epoch",
    "sparsity",
    "weights_trained",
    "weights_evaluated",
    "train_seconds",
    "images_per_s",
    "diverged_epoch",  # only in a run that `train.on_divergence: stop` ended early
)
DENSE = ("test_acc", "final_test_acc", "best_val_acc", "best_epoch", "train_seconds", "images_per_s")
MASK = ("method", "requested_sparsity", "sparsity", "empty_layers")
ANALYSIS = ("mean_zero_fraction",)
DATA = ("dataset", "num_classes", "sizes")


def headline(record: Mapping[str, Any], keys: Sequence[str]) -> dict[str, Any]:
    """The `keys` of `record` that it has, in that order; a list (empty layer names) as its length.

    DVC drops lists from its tables, and what one compares across masks is how many layers collapsed.
    """
    return {k: len(record[k]) if isinstance(record[k], list) else record[k] for k in keys if k in record}


def write(
    record: Mapping[str, Any],
    keys: Sequence[str],
    metrics: str | os.PathLike[str],
    detail: str | os.PathLike[str],
) -> None:
    """The full record to `detail`, then its headline to `metrics` (both atomic).

    The detail goes first: a reader that finds the headline can count on the detail behind it.
    """
    write_json(detail, dict(record))
    write_json(metrics, headline(record, keys))
