"""Resume files of one run: a folder whose files all carry the run's fingerprint.

A stage that runs long (the mask methods that train: `magnitude`, `gmp`, `lt`) keeps its progress
here, so that a killed run continues after its last finished epoch or round instead of starting
over. Every file records the fingerprint of the params and inputs it was made with; a file from
another run is ignored with a log line, never trusted. The folder lies outside DVC's outs (DVC
deletes a stage's outs before running it) and is emptied once the stage's outputs are written.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tost.errors import CheckpointError
from tost.io import load_tensors, save_tensors

log = logging.getLogger(__name__)


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

    def clear(self) -> None:
        """Delete every resume file: the stage has written its outputs, which are the record now."""
        if not self.root.is_dir():
            return
        for f in self.root.glob("*.pt"):
            f.unlink(missing_ok=True)
        with contextlib.suppress(OSError):  # not empty (someone else's files): leave the folder
            self.root.rmdir()
