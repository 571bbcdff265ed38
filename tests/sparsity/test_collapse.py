"""Layer collapse is a result: empty layers are kept and recorded; only a cut network is an error."""

from __future__ import annotations

import pytest
import torch

from sweep.executor import NO_PATH
from tests.conftest import SHAPE, params, tiny_net, tiny_prepared
from tost.errors import MaskError
from tost.prune import find
from tost.runtime import Runtime
from tost.sparsity import collapse
from tost.sparsity.mask import Mask, prunable


def _mask(net, empty: list[str], include_last: bool = False) -> Mask:
    """Everything kept but the `empty` layers."""
    weights = prunable(net, include_last=include_last)
    return Mask({n: torch.full(w.shape, n not in empty, dtype=torch.bool) for n, w in weights.items()})


@pytest.mark.parametrize(
    ("arch", "empty", "passes"),
    [
        ("resnet20", [], True),
        ("resnet20", ["layers.0.1.conv1.weight"], True),  # the block's shortcut goes around it
        ("resnet20", ["layers.1.0.conv2.weight", "layers.2.2.conv1.weight"], True),
        ("resnet20", ["conv1.weight"], False),  # the stem: nothing bypasses it
        (
            "resnet20",
            ["layers.1.0.conv1.weight", "layers.1.0.shortcut.0.weight"],
            False,
        ),  # both paths of a block
        ("vgg16", ["features.7.weight"], False),  # a plain chain has no way around any conv
    ],
)
def test_signal_passes_exactly_when_some_path_of_kept_weights_remains(arch, empty, passes):
    net = tiny_net(arch)
    mask = _mask(net, empty)
    assert collapse.empty_layers(mask) == empty
    assert collapse.signal_passes(net, mask.tensors, SHAPE) is passes


def test_an_empty_classifier_cuts_the_network():
    net = tiny_net()
    assert not collapse.signal_passes(net, _mask(net, ["fc.weight"], include_last=True).tensors, SHAPE)
    assert collapse.cut_by(
        net, _mask(net, ["fc.weight", "layers.0.0.conv1.weight"], include_last=True), SHAPE
    ) == ["fc.weight"]


def _find(tmp_path, empty: list[str], strict: bool = False):
    """The mask stage's `find`, importing a mask with the `empty` layers from a file."""
    net = tiny_net()
    path = tmp_path / "given.pt"
    _mask(net, empty).save(path)
    p = params(**{"prune.method": "file", "prune.path": str(path), "dense.epochs": 0, "train.device": "cpu",
                  "prune.batch_size": 16, "prune.empty_layers": "error" if strict else "keep"})  # fmt: skip
    return find(p, tiny_prepared(), net, Runtime.cpu())


def test_an_empty_residual_conv_is_kept_and_recorded(tmp_path):
    found = _find(tmp_path, ["layers.0.1.conv1.weight", "layers.2.0.conv2.weight"])
    assert found.metrics["empty_layers"] == ["layers.0.1.conv1.weight", "layers.2.0.conv2.weight"]
    assert found.metrics["kept_per_layer"]["layers.0.1.conv1.weight"] == 0
    assert found.metrics["kept_per_layer"]["conv1.weight"] == 4 * 1 * 3 * 3
    assert not found.mask.tensors["layers.0.1.conv1.weight"].any()


def test_the_strict_switch_refuses_any_empty_layer(tmp_path):
    with pytest.raises(
        MaskError, match=r"would leave layer layers\.0\.1\.conv1\.weight .* prune\.empty_layers=keep"
    ):
        _find(tmp_path, ["layers.0.1.conv1.weight"], strict=True)


def test_a_cut_network_is_refused_naming_the_layer(tmp_path):
    with pytest.raises(
        MaskError, match=r"no path from input to output: layer conv1\.weight has no weight"
    ) as err:
        _find(tmp_path, ["conv1.weight", "layers.0.1.conv1.weight"])
    assert "\n" not in str(err.value)
    assert NO_PATH in str(err.value)  # what the sweep reads to record the cell as cut, not failed
