"""Atomic artifact writes and the one safe `torch.load`.

Every file the pipeline writes goes through `atomic_path`: it is written under a temporary name
in the same directory and renamed into place, so a crash or a kill never leaves a half-written
artifact that DVC or a later stage would trust. Every tensor file is read with
`weights_only=True`, so a file from elsewhere can never run code.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pickle
import shutil
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from tost.errors import CheckpointError, TostError


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success rename it onto `path`, else delete it."""
    target = Path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    except OSError as err:
        raise TostError(f"cannot write {target}: {err.strerror or err}") from None
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.replace(tmp, target)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise TostError(f"cannot write {target}: {err.strerror or err}") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield an empty folder beside `path`; on success it takes the place of `path`, else it goes.

    A stage that writes several files (the prepared data's four) then leaves all of the new ones or
    all of the old ones, never a mix: a full disk on the second file changes nothing. The swap is
    two renames. An error names the file as the stage meant to write it, not the temporary folder.
    """
    target = Path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    except OSError as err:
        raise TostError(f"cannot write {target}: {err.strerror or err}") from None
    try:
        yield tmp
        _swap(tmp, target)
    except TostError as err:
        shutil.rmtree(tmp, ignore_errors=True)
        raise TostError(str(err).replace(str(tmp), str(target))) from None
    except OSError as err:
        shutil.rmtree(tmp, ignore_errors=True)
        raise TostError(f"cannot write {target}: {err.strerror or err}") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _swap(new: Path, target: Path) -> None:
    """Put folder `new` where `target` is, undoing the first rename if the second fails.

    Two renames, since a folder cannot replace a non-empty one; without the undo an error there
    would leave `target` missing and the old folder under a hidden name.
    """
    old = target.with_name(f".{target.name}.{os.getpid()}.old")
    if target.exists():
        os.replace(target, old)
    try:
        os.replace(new, target)
    except BaseException:
        if old.exists():
            os.replace(old, target)
        raise
    shutil.rmtree(old, ignore_errors=True)


def write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write a text file atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: str | os.PathLike[str], obj: Any) -> None:
    """Write JSON atomically, keys in insertion order, so diffs of metrics stay readable."""
    write_text(path, json.dumps(obj, indent=2, allow_nan=False) + "\n")


def write_csv(path: str | os.PathLike[str], rows: Sequence[Mapping[str, Any]]) -> None:
    """Rows of numbers as CSV, floats to 6 significant digits, columns in the first row's order.

    Written with the standard library, so the train stage does not import pandas for its curves.
    """
    columns = list(rows[0]) if rows else []
    lines = [",".join(columns)]
    lines += [
        ",".join(f"{r[c]:.6g}" if isinstance(r[c], float) else str(r[c]) for c in columns) for r in rows
    ]
    write_text(path, "\n".join(lines) + "\n")


def read_json(path: str | os.PathLike[str]) -> Any:
    """Read a JSON file, with one clear error when it is missing or broken."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise TostError(f"{path}: file not found") from None
    except json.JSONDecodeError as err:
        raise TostError(f"{path}: not valid JSON ({err})") from None
    except UnicodeDecodeError:
        raise TostError(f"{path}: not valid JSON (not UTF-8 text: a binary file?)") from None


CHECKSUM = "tost_sha256"  # the key save_tensors adds and load_tensors checks and removes


def digest(node: Any) -> str:
    """sha256 of every key, tensor (dtype, shape, bytes) and number in a nested container.

    A flipped bit inside a tensor's numbers leaves a torch file readable, and a mask or an init with
    one wrong value is still a valid one: only a digest of the content tells it from the original.
    """
    h = hashlib.sha256()
    _feed(h, node)
    return h.hexdigest()


def _feed(h: Any, node: Any) -> None:
    if isinstance(node, torch.Tensor):
        t = node.detach().cpu().contiguous().reshape(-1)
        h.update(f"T{t.dtype}{tuple(node.shape)}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes())
    elif isinstance(node, Mapping):
        h.update(b"{")
        for key in sorted(node, key=repr):
            h.update(repr(key).encode())
            _feed(h, node[key])
        h.update(b"}")
    elif isinstance(node, list | tuple):
        h.update(b"[")
        for item in node:
            _feed(h, item)
        h.update(b"]")
    else:
        h.update(repr(node).encode())


def save_tensors(path: str | os.PathLike[str], obj: Mapping[str, Any]) -> None:
    """`torch.save` atomically, with a digest of the content (checked by `load_tensors`).

    Only plain containers of tensors and numbers should go in.

    It writes through a Python file object, so that a failed write (a full disk) surfaces as the
    OSError that `atomic_path` turns into one clear line, the previous file staying in place; given a
    path, torch's C++ writer fails with a cryptic RuntimeError instead. It also makes the bytes depend
    on the content only (given a path, torch names the zip's inner folder after the temporary file),
    so DVC sees an unchanged artifact as unchanged.
    """
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        try:
            torch.save({**obj, CHECKSUM: digest(dict(obj))}, f)
        except RuntimeError as err:
            # torch's zip writer reports a failed write by a second error while closing the archive;
            # the OSError behind it (ENOSPC, EIO) is the one that says what is wrong.
            if isinstance(err.__context__, OSError):
                raise err.__context__ from None
            raise


def load_tensors(path: str | os.PathLike[str], map_location: str | torch.device = "cpu") -> Any:
    """The only `torch.load` of the project: weights_only, with one clear error per failure."""
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"{p}: file not found")
    try:
        obj = torch.load(p, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        raise CheckpointError(
            f"{p}: refused to load: the file holds Python objects other than tensors and plain "
            f"containers, which could run code ({str(err).splitlines()[0]})"
        ) from None
    except Exception as err:  # a damaged file makes torch's unpickler fail in any way (IndexError, ...)
        msg = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise CheckpointError(f"{p}: not a readable torch file (truncated or corrupted?): {msg}") from None
    if isinstance(obj, dict) and CHECKSUM in obj:  # files from elsewhere (prune.path) have none
        expected = obj.pop(CHECKSUM)
        if digest(obj) != expected:
            raise CheckpointError(f"{p}: does not match the checksum it was saved with (damaged?)")
    return obj
