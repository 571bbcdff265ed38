"""What identifies a run, and the resume files that carry that identity.

`run_identity` is the one definition of "the same run": a digest of the params sections a result
depends on (validated, so aliases and YAML number spellings do not matter) and of its input files.
The stages stamp their resume files with it, and the sweep matches finished experiments by it.

A stage that runs long (training; the mask methods that train) keeps its progress in a `ResumeDir`,
so that a killed run continues after its last finished epoch or round instead of starting over. A
file from another run is ignored with a log line, never trusted. The folder lies outside DVC's outs
(DVC deletes a stage's outs before running it) and is emptied once the stage's outputs are written.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tost.errors import CheckpointError
from tost.io import load_tensors, save_tensors

if TYPE_CHECKING:
    from tost.config import Params

log = logging.getLogger(__name__)


def _plain(obj: Any) -> Any:
    """Dataclasses and mappings as dicts, tuples as lists: the JSON form of validated params."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: _plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_plain(v) for v in obj]
    return obj


def file_digest(path: str | os.PathLike[str]) -> str:
    """sha256 of a file's bytes, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


NEVER = ("train.checkpoint_every",)  # when resume files are written: never what a run computes


def run_identity(
    params: Params,
    sections: Iterable[str],
    files: Iterable[str | os.PathLike[str]] = (),
    extra: Mapping[str, Any] | None = None,
    exclude: Iterable[str] = (),
) -> str:
    """Digest of the named `Params` fields (minus dotted `exclude` keys), `extra`, and input files.

    Two runs with the same identity compute the same result on the same device, so a resume file
    or a finished experiment with this identity stands for the run.
    """
    parts = {name: _plain(getattr(params, name)) for name in sections}
    for dotted in (*exclude, *(k for k in NEVER if k.split(".")[0] in parts)):
        section, key = dotted.split(".", 1)
        parts[section].pop(key)
    h = hashlib.sha256(json.dumps({**parts, **_plain(extra or {})}, sort_keys=True).encode())
    for f in files:
        h.update(file_digest(f).encode())
    return h.hexdigest()


@dataclass(frozen=True)
class ResumeDir:
    """Where one run keeps its resume files, and the fingerprint that identifies the run."""

    root: Path
    fingerprint: str

    def path(self, name: str) -> Path:
        """The file for `name` (a run name such as `lt[round 1/2]`), made safe for any filesystem."""
        slug = re.sub(r"[^A-Za-z0-9]+", "-", name).strip("-") or "state"
        return self.root / f"{slug}.pt"

    def load(self, name: str) -> dict[str, Any] | None:
        """The state saved under `name` by this very run, or None (nothing saved, or another run's)."""
        path = self.path(name)
        if not path.exists():
            return None
        try:
            state = load_tensors(path)
        except CheckpointError as err:  # our own cache: starting over is always safe
            log.info("%s; ignoring it, %s starts over", err, name)
            return None
        if not isinstance(state, dict) or state.get("fingerprint") != self.fingerprint:
            log.info("%s is from another run (params or inputs changed); %s starts over", path, name)
            return None
        return state

    def save(self, name: str, state: Mapping[str, Any]) -> None:
        """Write `state` atomically under `name`, stamped with this run's fingerprint."""
        save_tensors(self.path(name), {**state, "fingerprint": self.fingerprint})

    def discard(self, name: str) -> None:
        """Delete the file of `name`: that part of the run finished and its result is the record."""
        self.path(name).unlink(missing_ok=True)
        with contextlib.suppress(OSError):  # the folder goes once empty (others may still need it)
            self.root.rmdir()

    def clear(self) -> None:
        """Delete every resume file: the stage has written its outputs, which are the record now."""
        if not self.root.is_dir():
            return
        for f in self.root.glob("*.pt"):
            f.unlink(missing_ok=True)
        with contextlib.suppress(OSError):  # not empty (someone else's files): leave the folder
            self.root.rmdir()
