"""From a dataset to the prepared splits: seeded, disjoint, complete, class-balanced subsets."""

from __future__ import annotations

import pytest
import torch

from tests.conftest import repo_params
from tests.datasets.files import prep
from tost import config, data
from tost.datasets import split
from tost.errors import DataError


def _rows(split: data.Split) -> set[bytes]:
    return {bytes(x.numpy().tobytes()) + bytes([int(y)]) for x, y in zip(split.x, split.y, strict=True)}


def test_digits_splits_are_seeded_disjoint_and_complete():
    a = prep()
    b = prep()
    c = prep(seed=1)
    assert torch.equal(a.train.x, b.train.x) and torch.equal(a.val.y, b.val.y)
    assert not torch.equal(a.test.y, c.test.y)
    n = 1797
    assert len(a.test.y) == round(0.2 * n)
    assert len(a.val.y) == round(0.1 * (n - len(a.test.y)))
    assert len(a.train.y) + len(a.val.y) + len(a.test.y) == n


def test_carved_splits_partition_the_images():
    x = torch.arange(50, dtype=torch.uint8).view(50, 1, 1, 1).expand(50, 1, 2, 2).contiguous()
    y = torch.arange(50) % 3
    rest, held = split._carve(x, y, 0.3, seed=4, key="val_fraction")
    assert len(held.y) == 15
    assert len(rest.y) == 35
    ids = sorted(int(v) for v in torch.cat([rest.x[:, 0, 0, 0], held.x[:, 0, 0, 0]]))
    assert ids == list(range(50))  # disjoint and complete
    assert _rows(rest).isdisjoint(_rows(held))


def test_mean_std_are_the_train_split_statistics():
    p = prep()
    x = p.train.x.double() / 255
    assert p.mean[0] == pytest.approx(float(x.mean()))
    assert p.std[0] == pytest.approx(float(x.std()), rel=1e-6)


@pytest.mark.parametrize(
    ("val", "test", "key"), [(0.9999, 0.2, "data.val_fraction"), (0.0001, 0.2, "data.val_fraction"),
                             (0.1, 0.9999, "data.test_fraction")],
)  # fmt: skip
def test_empty_split_is_refused_naming_the_key(val, test, key):
    with pytest.raises(DataError, match=key):
        prep(val=val, test=test)


def test_unknown_dataset_is_refused_by_library_callers_too():
    cfg = config.parse(repo_params()).data
    object.__setattr__(cfg, "name", "mnist")  # past the config's own check
    with pytest.raises(DataError, match="data.name"):
        split.prepare(cfg, 0)


def test_train_subset_is_class_balanced_seeded_and_carves_val_from_itself():
    full = prep()
    sub = prep(subset=200)
    assert len(sub.train.y) + len(sub.val.y) == 200 and len(sub.val.y) == 20
    assert torch.equal(sub.test.y, full.test.y)  # the test split is never subsampled
    counts = torch.bincount(torch.cat([sub.train.y, sub.val.y]), minlength=10)
    assert counts.tolist() == [20] * 10
    again, other = prep(subset=200), prep(subset=200, seed=1)
    assert torch.equal(again.train.x, sub.train.x)
    assert not torch.equal(other.train.x, sub.train.x)
    odd = prep(subset=203)
    assert sorted(torch.bincount(torch.cat([odd.train.y, odd.val.y])).tolist()) == [20] * 7 + [21] * 3


@pytest.mark.parametrize(
    ("subset", "match"), [(100_000, "is more than the"), (1430, "needs 143 images of class")]
)
def test_train_subset_larger_than_the_data_is_refused(subset, match):
    with pytest.raises(DataError, match=rf"data.train_subset={subset} {match}"):
        prep(subset=subset)
