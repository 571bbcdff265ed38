"""Counting rules of mask selection: exact counts, deterministic ties, nested rounds."""

from __future__ import annotations

import re

import pytest
import torch

from tost.errors import MaskError
from tost.sparsity.mask import Mask
from tost.sparsity.schedule import empty_layer_error, round_sparsities, select


def test_round_sparsities_are_geometric_and_end_at_target():
    s = round_sparsities(0.9, 3)
    assert s[-1] == pytest.approx(0.9)
    kept = [1 - x for x in s]
    assert kept[1] / kept[0] == pytest.approx(kept[0])  # same fraction kept each round
    assert round_sparsities(0.5, 1) == [pytest.approx(0.5)]


def _scores(seed=0):
    g = torch.Generator().manual_seed(seed)
    return {
        "a": torch.rand(10, 3, generator=g),
        "b": torch.rand(7, generator=g),
        "c": torch.rand(33, generator=g),
    }


@pytest.mark.parametrize("sparsity", [0.0, 0.3, 0.5, 0.77, 0.9])
def test_global_selection_prunes_exactly_round_s_n(sparsity):
    m = select(_scores(), sparsity, "global")
    total = 30 + 7 + 33
    assert m.stats().total == total
    assert total - m.stats().kept == round(sparsity * total)


@pytest.mark.parametrize("sparsity", [0.3, 0.5, 0.8])
def test_layerwise_selection_is_exact_per_layer(sparsity):
    scores = _scores()
    m = select(scores, sparsity, "layerwise")
    for name, s in scores.items():
        assert int((~m.tensors[name]).sum()) == round(sparsity * s.numel())


def test_keeps_the_highest_scores_globally():
    scores = _scores()
    m = select(scores, 0.6, "global")
    kept = torch.cat([s.reshape(-1)[m.tensors[n].reshape(-1)] for n, s in scores.items()])
    pruned = torch.cat([s.reshape(-1)[~m.tensors[n].reshape(-1)] for n, s in scores.items()])
    assert kept.min() > pruned.max()


def test_ties_are_broken_by_position_deterministically():
    scores = {"a": torch.ones(6), "b": torch.tensor([1.0, 1.0, 2.0, 0.0])}
    m1, m2 = select(scores, 0.5, "global"), select(scores, 0.5, "global")
    assert all(torch.equal(m1.tensors[n], m2.tensors[n]) for n in scores)
    # "b"[2] (score 2) wins; the four remaining places go to the earliest of the tied ones
    assert m1.tensors["a"].tolist() == [True, True, True, True, False, False]
    assert m1.tensors["b"].tolist() == [False, False, True, False]


def test_previous_mask_makes_rounds_nested():
    scores1, scores2 = _scores(1), _scores(2)
    m1 = select(scores1, 0.5, "global")
    m2 = select(scores2, 0.75, "global", previous=m1)
    assert m2.is_subset_of(m1)
    assert not m1.is_subset_of(m2)


def test_a_layer_may_be_pruned_empty_and_the_strict_error_names_it():
    scores = {"big": torch.rand(1000) + 1.0, "small": torch.rand(4)}
    mask = select(scores, 0.9, "global")  # layer collapse is a result: tost.prune records it
    assert not mask.tensors["small"].any() and mask.stats().kept == 100
    err = empty_layer_error(["small"], {"big": 1000, "small": 4}, 0.9, "global")
    assert isinstance(err, MaskError) and "layer small (4 weights) with no weight" in str(err)


def test_nan_scores_are_refused():
    with pytest.raises(MaskError, match="NaN"):
        select({"a": torch.tensor([1.0, float("nan")])}, 0.5, "global")


def test_select_keeps_exactly_the_top_scores_as_bool_masks_of_their_shapes():
    scores = _scores()
    m = select(scores, 0.5, "global")
    assert isinstance(m, Mask)
    for n, s in scores.items():
        assert m.tensors[n].dtype == torch.bool and m.tensors[n].shape == s.shape
    flat = torch.cat([s.flatten() for s in scores.values()])
    kept = torch.cat([m.tensors[n].flatten() for n in scores])
    assert int((~kept).sum()) == round(0.5 * flat.numel())  # exactly round(s × n) pruned
    assert flat[kept].min() >= flat[~kept].max()  # and they are the lowest scores


def test_layerwise_error_gives_the_limit_and_the_limit_keeps_every_layer_alive():
    scores = {"big": torch.rand(1000), "small": torch.rand(4)}
    assert not select(scores, 0.9, "layerwise").tensors["small"].any()
    err = str(empty_layer_error(["small"], {"big": 1000, "small": 4}, 0.9, "layerwise"))
    assert re.search(r"layer small \(4 weights\) with no weight; .* below 0\.8750", err)
    assert "\n" not in err
    assert int(select(scores, 0.8749, "layerwise").tensors["small"].sum()) == 1
