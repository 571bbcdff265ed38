"""Generated bad artifacts: every file a stage reads, truncated, bit-flipped, swapped or replaced.

Prepared data (a split file, meta.json), mask.pt, init.pt, a resume file, a pruned checkpoint given
as `prune.path` and a Fashion-MNIST IDX file (small, in the real gzip/IDX format) are made once,
then damaged: cut at a random byte, one random bit flipped, replaced by another artifact, or by a
pickle that runs code when loaded. Reading them must raise a `TostError` whose one line names the
file, or give back exactly what the intact file holds (every file tost writes carries a digest of
its content, and the prepared data a sha256 per split); a pruned checkpoint from elsewhere has no
digest, so any readable one is a valid mask; a resume file that is not this run's is ignored and
training starts over. No other exception, and the pickle's code never runs.
"""

from __future__ import annotations

import dataclasses
import functools
import gzip
import hashlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from tests.conftest import random_mask, repo_params, same_tensors, tiny_net, tiny_prepared
from tests.datasets.files import idx
from tests.sparsity.contexts import make_ctx
from tost import config, data, models
from tost.datasets import fashion
from tost.errors import TostError
from tost.io import load_tensors, save_tensors
from tost.resume import ResumeDir
from tost.runtime import Runtime
from tost.sparsity.mask import Mask, prunable
from tost.sparsity.methods.file import read_mask
from tost.train import Trainer, check_state

SIDE_EFFECT = Path(tempfile.gettempdir()) / "tost-fuzz-pickle-ran"


class RunsCode:
    def __reduce__(self):  # what a malicious pickle does: call something when loaded
        return (os.system, (f"touch {SIDE_EFFECT}",))


RELATIVE = {
    "train.pt": "data/train.pt",
    "meta.json": "data/meta.json",
    "mask.pt": "mask.pt",
    "init.pt": "init.pt",
    "trained.pt": "dense/trained.pt",
    "resume": "resume/train.pt",
    "prune.path": "pruned.pth.tar",
    "fashion": "fashion/train-labels-idx1-ubyte.gz",
}
KINDS = list(RELATIVE)
FASHION = {  # small files in the real format, md5 of their IDX bytes patched in (as test_fashion does)
    "train-images-idx3-ubyte.gz": np.arange(6 * 28 * 28).reshape(6, 28, 28) % 256,
    "train-labels-idx1-ubyte.gz": np.arange(6) % 10,
    "t10k-images-idx3-ubyte.gz": np.arange(4 * 28 * 28).reshape(4, 28, 28) % 251,
    "t10k-labels-idx1-ubyte.gz": np.arange(4) % 10,
}


def _trainer() -> Trainer:
    p = config.parse(repo_params())
    net = tiny_net()
    cfg = dataclasses.replace(p.train, batch_size=16)
    return Trainer(net, random_mask(net), tiny_prepared(n=40), p.data, cfg, [], Runtime.cpu(), 0)


def _trained_state() -> dict[str, torch.Tensor]:
    """What the dense stage's trained.pt stands for here: weights other than the init's."""
    return tiny_net(seed=1).state_dict()


@functools.cache
def _originals() -> dict[str, bytes]:
    """Every artifact's bytes, made for real once (the data stage's, the mask stage's, ...)."""
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        data.save_prepared(tiny_prepared(n=40), folder / "data")
        net = tiny_net()
        random_mask(net).save(folder / "mask.pt")
        save_tensors(
            folder / "init.pt", {"format": "tost-init/1", "arch": "resnet20", "state_dict": net.state_dict()}
        )
        (folder / "dense").mkdir()
        save_tensors(
            folder / "dense" / "trained.pt",
            {
                "format": "tost-checkpoint/1",
                "arch": "resnet20",
                "variant": "dense",
                "state_dict": _trained_state(),
            },
        )
        ResumeDir(folder / "resume", "run").save("train", _trainer().state())
        torch.save({"state_dict": _pruned_state()}, folder / "pruned.pth.tar")  # the original's format
        (folder / "fashion").mkdir()
        for name, array in FASHION.items():
            (folder / "fashion" / name).write_bytes(gzip.compress(idx(array), mtime=0))
        return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def _artifacts(folder: Path) -> dict[str, Path]:
    for relative, content in _originals().items():
        (folder / relative).parent.mkdir(parents=True, exist_ok=True)
        (folder / relative).write_bytes(content)
    return {kind: folder / relative for kind, relative in RELATIVE.items()}


def _resume(path: Path) -> dict | None:
    """What `Trainer.fit` does with a resume file before it loads anything from it."""
    state = ResumeDir(path.parent, "run").load("train")
    if state is not None:
        check_state(state, path)
    return state


def _mask(path: Path) -> tuple[Mask, dict]:
    """What the train stage does with a mask file: load it, then check it against the model."""
    mask, meta = Mask.load(path)
    mask.check(prunable(tiny_net()), str(path))
    return mask, meta


def _read(kind: str, path: Path) -> Callable[[], Any]:
    model_cfg = config.parse(repo_params()).model
    cfg = dataclasses.replace(model_cfg, arch="resnet20", width=4)
    readers = {
        "train.pt": lambda: data.load_prepared(path.parent),
        "meta.json": lambda: data.load_prepared(path.parent),
        "mask.pt": lambda: _mask(path),
        "init.pt": lambda: models.from_file(path, cfg, 4, (1, 8, 8)),
        "trained.pt": lambda: models.from_file(path, cfg, 4, (1, 8, 8)),
        "resume": lambda: _resume(path),
        "prune.path": lambda: read_mask(str(path), make_ctx(dense_epochs=0))[0],
        "fashion": lambda: _fashion(path.parent),
    }
    return readers[kind]


def _fashion(root: Path) -> Any:
    md5 = {name: hashlib.md5(idx(array)).hexdigest() for name, array in FASHION.items()}
    with mock.patch.object(fashion, "IDX_MD5", md5), mock.patch.object(fashion, "DEBIAN", root / "none"):
        return fashion.load(root, False)


READ_AS_FOLDER = {"train.pt", "meta.json", "fashion"}  # their readers take the folder, and may name it


def _pruned_state() -> dict[str, torch.Tensor]:
    """A pruned checkpoint's weights: the pruned ones zeroed, as in the original's pruned.pth.tar."""
    pruned = tiny_net()
    random_mask(pruned, apply=True)
    return pruned.state_dict()


def _same_state(want: dict[str, torch.Tensor]) -> Callable[[Any], None]:
    def check(net: Any) -> None:
        got = net.state_dict()
        assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)

    return check


def _same_mask(want: dict[str, torch.Tensor]) -> Callable[[Any], None]:
    def check(mask: Any) -> None:
        assert same_tensors(mask.tensors, want)

    return check


# The swaps a reader accepts, because the other file is valid for it too, and what it must then read.
ACCEPTED_SWAPS: dict[tuple[str, str], Callable[[Any], None]] = {
    ("init.pt", "prune.path"): lambda net: _same_state(_pruned_state())(net),  # a pruned checkpoint as init
    ("init.pt", "trained.pt"): lambda net: _same_state(_trained_state())(net),  # any checkpoint of the model
    ("trained.pt", "init.pt"): lambda net: _same_state(tiny_net().state_dict())(net),
    ("trained.pt", "prune.path"): lambda net: _same_state(_pruned_state())(net),
    ("prune.path", "mask.pt"): lambda mask: _same_mask(random_mask(tiny_net()).tensors)(mask),  # a tost mask
    ("prune.path", "init.pt"): lambda mask: _same_mask(_nonzero(tiny_net().state_dict()))(mask),
    ("prune.path", "trained.pt"): lambda mask: _same_mask(_nonzero(_trained_state()))(mask),
}


def _nonzero(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The mask a checkpoint given as `prune.path` stands for: its nonzero prunable weights."""
    return {k: state[k] != 0 for k in prunable(tiny_net())}


DAMAGE = st.one_of(
    st.tuples(st.just("truncate"), st.floats(min_value=0.0, max_value=0.999)),
    st.tuples(
        st.just("flip"), st.floats(min_value=0.0, max_value=0.999), st.integers(min_value=0, max_value=7)
    ),
    st.tuples(st.just("swap"), st.sampled_from(KINDS)),
    st.tuples(st.just("pickle")),
    st.tuples(st.just("retype"), st.sampled_from(["dtype", "shape"])),
)
RETYPABLE = {"train.pt", "mask.pt", "init.pt", "trained.pt", "resume", "prune.path"}  # files of tensors


def _retype(obj: Any, how: str) -> bool:
    """Change the first tensor found in `obj` (a nested dict) to float64 or to one flat row."""
    for key, value in obj.items():
        if isinstance(value, torch.Tensor):
            obj[key] = value.double() if how == "dtype" else value.reshape(-1)
            return True
        if isinstance(value, dict) and _retype(value, how):
            return True
    return False


def _damage(target: Path, how: tuple, files: dict[str, Path]) -> None:
    raw = target.read_bytes()
    if how[0] == "truncate":
        target.write_bytes(raw[: int(how[1] * len(raw))])
    elif how[0] == "flip":
        at = int(how[1] * len(raw))
        target.write_bytes(raw[:at] + bytes([raw[at] ^ (1 << how[2])]) + raw[at + 1 :])
    elif how[0] == "swap":
        target.write_bytes(files[how[1]].read_bytes())
    elif how[0] == "retype":  # written wrongly but intact: a valid checksum over the wrong content
        obj = load_tensors(target)
        assert _retype(obj, how[1])
        save_tensors(target, obj) if target.suffix == ".pt" else torch.save(obj, target)
    else:
        torch.save({"format": "tost-init/1", "x": RunsCode()}, target)


@pytest.mark.parametrize("kind", KINDS)
@settings(max_examples=max(settings().max_examples // 5, 10))  # 8 kinds: about the CI profile's time in all
@given(how=DAMAGE)
def test_a_damaged_artifact_is_refused_in_one_line_naming_it_or_read_as_valid(kind, how):
    assume(how[0] != "retype" or kind in RETYPABLE)
    _refused_or_read_as_valid(kind, how)


@pytest.mark.parametrize(("kind", "other"), [(k, o) for k in KINDS for o in KINDS if o != k])
def test_every_artifact_in_place_of_another_is_refused_or_read_exactly(kind, other):
    _refused_or_read_as_valid(kind, ("swap", other))


@pytest.mark.parametrize("how", ["dtype", "shape"])
@pytest.mark.parametrize("kind", sorted(RETYPABLE))
def test_a_wrong_dtype_or_shape_is_refused_or_read_as_valid(kind, how):
    _refused_or_read_as_valid(kind, ("retype", how))


def _refused_or_read_as_valid(kind: str, how: tuple) -> None:
    SIDE_EFFECT.unlink(missing_ok=True)
    with tempfile.TemporaryDirectory() as folder:
        files = _artifacts(Path(folder))
        target = files[kind]
        _damage(target, how, files)
        try:
            out = _read(kind, target)()
        except TostError as err:
            message = str(err)
            named = str(target.parent) if kind in READ_AS_FOLDER else str(target)
            assert "\n" not in message and named in message, message
        else:
            if kind == "resume":
                assert out is None or out["epoch"] == 0  # None: another run's (or unreadable): starting over
            elif how[0] == "swap" and how[1] != kind:  # another valid file of the project, read as this kind
                assert (kind, how[1]) in ACCEPTED_SWAPS, (kind, how[1])
                ACCEPTED_SWAPS[kind, how[1]](out)
            elif kind == "mask.pt":  # checksummed (tost.io.digest): only the intact mask loads
                mask, _ = out
                want = random_mask(tiny_net()).tensors
                assert same_tensors(mask.tensors, want)
            elif kind in ("init.pt", "trained.pt"):  # checksummed: only the intact weights load
                want = tiny_net().state_dict() if kind == "init.pt" else _trained_state()
                assert same_tensors(out.state_dict(), want)
            elif kind == "fashion":  # checksummed: only intact numbers load (a gzip header bit may differ)
                assert out.train_y.tolist() == FASHION["train-labels-idx1-ubyte.gz"].tolist()
            elif kind == "prune.path":  # weights != 0: any readable checkpoint of this model is a mask
                assert isinstance(out, Mask) and set(out.tensors) == set(make_ctx(dense_epochs=0).weights())
            elif kind in ("train.pt", "meta.json"):  # checksummed: only an intact split loads
                original = tiny_prepared(n=40)
                assert torch.equal(out.train.x, original.train.x) and torch.equal(
                    out.train.y, original.train.y
                )
    assert not SIDE_EFFECT.exists()  # the pickle's code never ran
