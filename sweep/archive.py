"""Finished experiments kept in git, so a study outlives the checkout that ran it.

DVC keeps an experiment as a git ref of the checkout that ran it (`refs/exps/...`); a fresh clone, or
the next sitting on another machine, has none of them, and a study of several hours could only be
finished in one sitting. So every table the sweep writes also writes, per answered cell, the part of
its experiment that tables read: params, headline metrics and each variant's machine record, as one
JSON file under `metrics/experiments/`. With `--all-commits` the sweep reuses them like earlier
commits' experiments (DVC's own come first). The artifacts (checkpoints, masks) are not kept: a cell
that needs them again is trained again.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sweep.dvc import Experiment

ARCHIVE = Path("metrics/experiments")
DETAIL = "metrics/detail/train/{variant}.json"  # the full record; only its machine is kept
KEPT = ("machine",)


@dataclass(frozen=True)
class Archived:
    """An experiment read back from the archive, with the parts of its commit's files that were kept."""

    experiment: Experiment
    files: Mapping[str, Mapping[str, Any]]  # path -> the kept keys of that JSON file
    cut: str = ""  # a cell whose mask leaves no path: why (the mask stage's error); nothing trained

    def read(self, path: str) -> str | None:
        """The kept part of a file of the experiment's commit, as `sweep.dvc.file_at` gives files."""
        return json.dumps(self.files[path]) if path in self.files else None


def variants(exp: Experiment) -> list[str]:
    """The variants `exp` trained: those with a headline metrics file."""
    return [Path(p).stem for p in exp.metrics if p.startswith("metrics/train/") and p.endswith(".json")]


def record(exp: Experiment, read: Callable[[str], str | None]) -> dict:
    """The archive's JSON for `exp`; `read(path)` gives a file of its commit (None where absent)."""
    files = {}
    for variant in variants(exp):
        text = read(DETAIL.format(variant=variant))
        data = json.loads(text) if text else {}
        if kept := {k: data[k] for k in KEPT if k in data}:
            files[DETAIL.format(variant=variant)] = kept
    return {"name": exp.name, "rev": exp.rev, "params": exp.params, "metrics": exp.metrics, "files": files}


def save(exp: Experiment, read: Callable[[str], str | None], root: Path = ARCHIVE) -> Path:
    """Write `exp`'s record as `<root>/<name>.json` (sorted keys: a rewrite of the same one is no diff)."""
    return _write(root, exp.name, record(exp, read))


def save_cut(name: str, params: Mapping[str, Any], reason: str, root: Path = ARCHIVE) -> Path:
    """Record that cell `name`'s mask cuts the network, so no later sitting trains it again."""
    return _write(
        root,
        name,
        {"name": name, "rev": "", "params": dict(params), "metrics": {}, "files": {}, "cut": reason},
    )


def _write(root: Path, name: str, data: Mapping[str, Any]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    path = root / f"{name}.json"
    path.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    return path


def load(root: Path = ARCHIVE) -> list[Archived]:
    """Every record under `root`, by name; a file that is not a record is skipped, not fatal."""
    out = []
    for path in sorted(root.glob("*.json")) if root.is_dir() else []:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            exp = Experiment(data["name"], data["rev"], data["params"], data["metrics"])
        except (json.JSONDecodeError, KeyError, TypeError):
            continue
        out.append(Archived(exp, data.get("files") or {}, str(data.get("cut") or "")))
    return out
