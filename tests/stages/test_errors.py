"""Nothing silent: every user mistake through a real stage is exit code 2, one readable line, no outputs."""

from __future__ import annotations

import errno
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

import tost.data
import tost.datasets.cifar as cifar
import tost.io
from stages import data as data_stage
from stages import mask as mask_stage
from stages import train as train_stage
from tests.conftest import offline, repo_params
from tests.stages.conftest import edit_params, env, mask_args, one_line, train_cmd, workdir
from tost.errors import TostError
from tost.models import build
from tost.sparsity.mask import FORMAT, Enforcer, Mask, prunable


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Path:
    """One working folder (params, 256 training images, dense init, a mask) built once per module: every
    test below breaks one thing in its own copy, and nothing else about the folder is under test."""
    with pytest.MonkeyPatch.context() as mp:
        return workdir(tmp_path_factory.mktemp("template"), mp, repo_params(), epochs=1, train_images=256)


@pytest.fixture
def work(tmp_path, monkeypatch, template) -> Path:
    """This test's copy of the template, as the current folder."""
    shutil.copytree(template, tmp_path, dirs_exist_ok=True)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_init_from_another_architecture_isone_line(work):
    params = yaml.safe_load((work / "params.yaml").read_text())
    params["model"]["arch"] = "vgg16"
    (work / "params.yaml").write_text(yaml.safe_dump(params))
    proc = subprocess.run(train_cmd("x"), cwd=work, env=env(), capture_output=True, text=True, timeout=300)
    line = one_line(proc)
    assert line.startswith("error: artifacts/init.pt: does not fit model.arch=vgg16 width=8: ")
    assert "missing" in line
    assert not (work / "x").exists()


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:100])


SUBPROCESS_CASES = {
    # name: (needs a mask, params changes, damage, stage and arguments, the line must match)
    "unknown-params-key": (
        False, {"train.typo": 1}, None, ["stages.check", "--out", "x/params.ok"],
        r"^error: params\.yaml: train: unknown key\(s\) \['typo'\]",
    ),
    "cut-network": (
        False, {"prune.sparsity": 0.999}, None, ["stages.mask", *mask_args("x")],
        r"^error: random at sparsity 0\.999 leaves no path from input to output: layer \S+ has no weight",
    ),
    "empty-layer-strict": (
        False, {"prune.sparsity": 0.999, "prune.empty_layers": "error"}, None,
        ["stages.mask", *mask_args("x")],
        r"^error: sparsity 0\.9990 \(global\) would leave layer \S+ \(\d+ weights\).* with no weight; lower",
    ),
    "truncated-mask": (
        True, {}, "artifacts/mask.pt", train_cmd("x")[2:],
        r"^error: artifacts/mask\.pt: not a readable torch file \(truncated or corrupted\?\)",
    ),
    "non-finite-loss": (
        True, {"train.lr": 1e30}, None, train_cmd("x")[2:],
        r"^error: train\[baseline\]: loss became non-finite at epoch 1, step \d+; .*train\.lr",
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", list(SUBPROCESS_CASES))
def test_bad_input_through_the_real_stage_isone_line(work, case):
    needs_mask, changes, damage, argv, expected = SUBPROCESS_CASES[case]
    if not needs_mask:
        (work / "artifacts" / "mask.pt").unlink()
    edit_params(work, {"train.epochs": 2, **changes})
    if damage:
        _truncate(work / damage)
    proc = subprocess.run([sys.executable, "-m", *argv], cwd=work, env=env(), capture_output=True,
                          text=True, timeout=300)  # fmt: skip
    assert re.search(expected, one_line(proc)), proc.stderr
    assert not (work / "x").exists()  # nothing written, not even a folder


def test_cuda_requested_without_gpu_isone_line(work, monkeypatch, stage_error):
    edit_params(work, {"train.device": "cuda"})
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    line = stage_error(mask_stage.main, mask_args("x"))
    assert line == "error: train.device=cuda but no CUDA GPU is visible; use train.device=auto or cpu"
    assert not (work / "x").exists()


def test_prune_batch_size_larger_than_the_data_names_its_key(work, stage_error):
    edit_params(work, {"prune.batch_size": 100_000})
    line = stage_error(mask_stage.main, mask_args("x"))
    assert line.startswith("error: params.yaml: prune.batch_size=100000 is larger than the training split")
    assert not (work / "x").exists()


def test_dataset_missing_without_network_isone_line(tmp_path, monkeypatch, raw_params, stage_error):
    raw_params["data"].update(name="cifar10", root=str(tmp_path / "raw"), download=True)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw_params))
    monkeypatch.chdir(tmp_path)

    monkeypatch.setattr(cifar, "download_and_extract_archive", offline)
    line = stage_error(
        data_stage.main,
        ["--out", "artifacts/data", "--metrics", "metrics/data.json", "--detail", "metrics/detail/data.json"],
    )
    assert "cifar-10-python.tar.gz: download failed" in line
    assert str(tmp_path / "raw") in line
    assert not (tmp_path / "artifacts").exists()
    assert not (tmp_path / "metrics").exists()


def _bad_masks(good: Path) -> dict[str, tuple[dict, str]]:
    """Mask files the train stage must refuse, and the fragment its error line must hold."""
    masks = Mask.load(good)[0].tensors
    first = next(iter(masks))
    other = Mask.ones(prunable(build("vgg16", 10, (1, 8, 8), 8))).tensors
    wrap = {"format": FORMAT, "meta": {}}
    return {
        "another-arch": ({**wrap, "masks": other}, "unknown entries"),
        "non-binary": ({**wrap, "masks": {**masks, first: masks[first].float() * 0.5}}, "neither 0 nor 1"),
        "mis-shaped": ({**wrap, "masks": {**masks, first: masks[first].reshape(-1)}}, "has shape"),
    }


@pytest.mark.parametrize("case", ["another-arch", "non-binary", "mis-shaped"])
def test_train_stage_refuses_a_bad_mask_inone_line(work, stage_error, case):
    obj, fragment = _bad_masks(work / "artifacts" / "mask.pt")[case]
    torch.save(obj, work / "artifacts" / "mask.pt")
    line = stage_error(train_stage.main, train_cmd("x")[3:])
    assert fragment in line
    assert not (work / "x").exists()


def _full_disk(real_open, budget: int = 100):
    """`open` whose files fail like a full disk once `budget` bytes are written."""

    class FullDiskFile:
        def __init__(self, f) -> None:
            self.f, self.left = f, budget

        def write(self, b) -> int:
            if len(b) > self.left:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            self.left -= len(b)
            return self.f.write(b)

        def __getattr__(self, name):
            return getattr(self.f, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc) -> None:
            self.f.close()

    return lambda path, mode="r", *a, **k: FullDiskFile(real_open(path, mode, *a, **k))


def test_disk_full_keeps_the_old_file_and_isone_line(work, monkeypatch, stage_error):
    out = work / "artifacts" / "data"
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    siblings = sorted(p.name for p in out.parent.iterdir())
    edit_params(work, {"seed": 1})  # different splits: every file would change
    monkeypatch.setattr(tost.io, "open", _full_disk(open), raising=False)
    line = stage_error(
        data_stage.main,
        ["--out", "artifacts/data", "--metrics", "metrics/data.json", "--detail", "metrics/detail/data.json"],
    )
    assert line == "error: cannot write artifacts/data/train.pt: No space left on device"
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # old files intact, no temporaries
    assert sorted(p.name for p in out.parent.iterdir()) == siblings


@pytest.mark.parametrize("failing", ["train.pt", "val.pt", "test.pt", "meta.json"])
def test_the_data_stage_writes_all_of_its_files_or_none(work, monkeypatch, stage_error, failing):
    """Four files, each atomic: a failure in any one must leave the previous four, not a mix."""
    out = work / "artifacts" / "data"
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    siblings = sorted(p.name for p in out.parent.iterdir())
    edit_params(work, {"seed": 1})  # different splits: every file would change
    real_save, real_json = tost.data.save_tensors, tost.data.write_json

    def full(real):
        def write(path, obj):
            if path.name == failing:
                raise TostError(f"cannot write {path}: No space left on device")
            return real(path, obj)

        return write

    monkeypatch.setattr(tost.data, "save_tensors", full(real_save))
    monkeypatch.setattr(tost.data, "write_json", full(real_json))
    line = stage_error(
        data_stage.main,
        ["--out", "artifacts/data", "--metrics", "metrics/data.json", "--detail", "metrics/detail/data.json"],
    )
    assert line == f"error: cannot write artifacts/data/{failing}: No space left on device"
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in out.parent.iterdir()) == siblings  # no temporary folder left


def test_unenforced_mask_fails_the_train_stage_and_writes_nothing(work, monkeypatch, stage_error):
    monkeypatch.setattr(Enforcer, "__call__", lambda self: None)  # a broken enforcement
    line = stage_error(train_stage.main, train_cmd("x")[3:])
    assert re.fullmatch(r"error: train\[baseline\]: \d+ pruned weights of \S+ are not 0 after training", line)
    assert not (work / "x" / "metrics.json").exists()
    assert not (work / "x" / "detail.json").exists()
    assert not (work / "x" / "ckpt.pt").exists()
    assert not (work / "x" / "curve.csv").exists()
