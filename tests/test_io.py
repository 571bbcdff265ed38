"""Nothing lost, nothing unsafe: atomic writes, a full disk, malicious and truncated tensor files."""

from __future__ import annotations

import errno
import json
import os
import pickle
from pathlib import Path

import pytest
import torch

from tost.errors import CheckpointError, TostError
from tost.io import atomic_dir, atomic_path, load_tensors, save_tensors, write_json


class Boom:
    """A pickle payload that would run a shell command when unpickled."""

    def __reduce__(self):
        return (os.system, ("touch pwned",))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")  # the hand-made pickle, not ours: expected
def test_malicious_pickle_is_refused_and_never_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.pt"
    path.write_bytes(pickle.dumps({"state_dict": Boom()}))
    with pytest.raises(CheckpointError, match="refused to load"):
        load_tensors(path)
    assert not (tmp_path / "pwned").exists()


@pytest.mark.parametrize("cut", [0, 10, 200])
def test_truncated_file_is_a_clear_error(tmp_path, cut):
    good = tmp_path / "good.pt"
    save_tensors(good, {"w": torch.randn(64, 64)})
    bad = tmp_path / "bad.pt"
    bad.write_bytes(good.read_bytes()[:cut])
    with pytest.raises(CheckpointError, match="truncated or corrupted"):
        load_tensors(bad)


def test_atomic_write_leaves_old_file_on_crash(tmp_path):
    target = tmp_path / "m.json"
    write_json(target, {"a": 1})

    def crash_while_writing() -> None:
        with atomic_path(target) as tmp:
            tmp.write_text('{"a": 2, "half')
            raise RuntimeError("killed mid-write")

    with pytest.raises(RuntimeError):
        crash_while_writing()
    assert json.loads(target.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["m.json"]


def test_unwritable_output_directory_is_one_line(tmp_path):
    if os.geteuid() == 0:
        blocker = tmp_path / "file"
        blocker.write_text("not a directory")
        target = blocker / "out.json"  # a path under a regular file cannot be created, even by root
    else:
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o500)
        target = ro / "out.json"
    with pytest.raises(TostError, match="cannot write"):
        write_json(target, {"a": 1})


def test_disk_full_on_a_text_file_keeps_the_old_one(tmp_path, monkeypatch):
    target = tmp_path / "m.json"
    write_json(target, {"a": 1})

    def full(self, text, *a, **k):
        Path.write_bytes(self, text.encode()[:5])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(Path, "write_text", full)
    with pytest.raises(TostError) as err:
        write_json(target, {"a": 2})
    assert str(err.value) == f"cannot write {target}: No space left on device"
    assert json.loads(target.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["m.json"]


def _folder(path: Path, files: dict[str, str]) -> None:
    path.mkdir()
    for name, text in files.items():
        (path / name).write_text(text)


def _listing(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): p.read_text() for p in sorted(root.rglob("*")) if p.is_file()}


def test_atomic_dir_replaces_the_whole_folder(tmp_path):
    _folder(tmp_path / "data", {"a": "old a", "stale": "only in the old folder"})
    with atomic_dir(tmp_path / "data") as new:
        (new / "a").write_text("new a")
        (new / "b").write_text("new b")
    assert _listing(tmp_path) == {"data/a": "new a", "data/b": "new b"}  # no stale file, no temporaries


@pytest.mark.parametrize("where", ["writing", "first-rename", "second-rename"])
def test_atomic_dir_keeps_the_old_folder_whatever_fails(tmp_path, monkeypatch, where):
    _folder(tmp_path / "data", {"a": "old a"})
    real = os.replace

    def replace(src, dst):
        failing = {"first-rename": Path(src).name == "data", "second-rename": Path(src).suffix == ".tmp"}
        if failing.get(where):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real(src, dst)

    def write() -> None:
        with atomic_dir(tmp_path / "data") as new:
            (new / "a").write_text("new a")
            if where == "writing":
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(TostError, match=r"^cannot write .*data: No space left on device$"):
        write()
    assert _listing(tmp_path) == {"data/a": "old a"}  # the old folder in place, nothing else left
