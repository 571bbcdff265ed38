"""A tiny copy of this repository to run DVC (and SLURM) workflows on for real.

The copy holds the working tree's files (tracked and untracked, not ignored, metrics and dvc.lock
left out), its own git repo and DVC cache, and a params.yaml shrunk so that an experiment runs in
seconds.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from tests.conftest import ROOT


def env() -> dict[str, str]:
    """This interpreter's bin folder first (dvc, python), and a git identity for DVC's commits."""
    out = dict(os.environ)
    out["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{out.get('PATH', '')}"
    out.update(
        DVC_NO_ANALYTICS="1",
        GIT_AUTHOR_NAME="tost test",
        GIT_AUTHOR_EMAIL="test@tost.local",
        GIT_COMMITTER_NAME="tost test",
        GIT_COMMITTER_EMAIL="test@tost.local",
    )
    out["OMP_NUM_THREADS"] = out.get("OMP_NUM_THREADS") or "1"  # faster starts; tests run side by side
    return out


def run(cwd: Path, *cmd: str, check: bool = True, timeout: float = 900) -> subprocess.CompletedProcess:
    """Run a command in the copy; a failure shows its whole output."""
    proc = subprocess.run(cmd, cwd=cwd, env=env(), capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def tiny_params(raw: dict) -> dict:
    """Width 4, two epochs, one analysis batch: the whole pipeline in seconds."""
    raw["model"]["width"] = 4
    raw["train"].update(epochs=2, batch_size=128)
    raw["dense"]["epochs"] = 1
    raw["prune"]["sparsity"] = 0.9
    raw["analysis"]["batches"] = 1
    raw["tricks"]["run"] = ["baseline", "tost"]  # every trick still runs, inside tost
    raw["tricks"]["lrsi"]["iters"] = 3
    raw["report"].update(methods=["snip"], seeds=[0, 1], sparsities=[0.9], jobs=1)
    return raw


def copy(dest: Path, params: dict) -> Path:
    """The copy in `dest`, with `params` as its params.yaml, committed once."""
    files = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    for f in files:
        src = ROOT / f
        if src.is_file() and not f.startswith(("metrics/", "dvc.lock")):
            (dest / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / f)
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run(dest, "git", "init", "-q")
    run(dest, "git", "add", "-A")
    run(dest, "git", "commit", "-qm", "tiny copy")
    return dest
