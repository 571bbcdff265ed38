"""Same params, same numbers, whatever the command: `train.threads` rules, not OMP_NUM_THREADS.

One tiny pipeline with `train.threads: 2`, made three times from scratch: by `dvc repro` with
OMP_NUM_THREADS=1, by `dvc exp run` with it unset (torch's default: every core) and by the sweep (DVC's
queue) with it at 3. Before `train.threads` existed the three computed with 1, all and 3 threads, and
their fp32 bits differed (1 against 2 threads moved the final training loss in the 2nd digit); now
every stage takes `train.threads` and the records are equal to the last bit, timings aside. The
records name the machine that made them.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from sweep import dvc
from tests.conftest import ROOT
from tests.tinyrepo import copy, env, run, tiny_params

pytestmark = pytest.mark.slow
TIMING = ("seconds", "images_per_s")
# The full records: their losses are continuous, where two-epoch accuracies of a tiny net can agree
# by chance (they did, at 2, 2 and 3 threads, before the fix).
FILES = tuple(f"metrics/detail/{f}.json" for f in ("dense", "mask", "train/baseline", "train/tost"))


def _run(repo: Path, omp: str | None, *cmd: str) -> str:
    e = env()
    e.pop("OMP_NUM_THREADS")
    if omp is not None:
        e["OMP_NUM_THREADS"] = omp
    proc = subprocess.run(cmd, cwd=repo, env=e, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"{' '.join(cmd)}:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def _numbers(record: dict) -> dict:
    return {k: v for k, v in record.items() if not k.endswith(TIMING) and k != "machine"}


def _records(repo: Path, rev: str | None = None) -> dict[str, dict]:
    text = (
        (lambda f: (repo / f).read_text())
        if rev is None
        else (lambda f: run(repo, "git", "show", f"{rev}:{f}").stdout)
    )
    return {f: _numbers(json.loads(text(f))) for f in FILES}


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    raw = tiny_params(yaml.safe_load((ROOT / "params.yaml").read_text()))
    raw["report"].update(methods=["random"], seeds=[0], jobs=1)  # the sweep's one cell: the committed params
    raw["train"]["threads"] = 2
    return copy(tmp_path_factory.mktemp("threads"), raw)


def test_repro_exp_run_and_the_sweep_give_the_same_bits_whatever_omp_num_threads_says(repo):
    out = _run(repo, "1", "dvc", "repro")
    assert "train.threads=2 wins over OMP_NUM_THREADS=1" in out
    by_repro = _records(repo)
    assert by_repro["metrics/detail/train/tost.json"]["final_train_loss"] > 0
    machine = json.loads((repo / "metrics/detail/train/tost.json").read_text())["machine"]
    assert machine["threads"] == 2 and machine["precision"] == "fp32"
    assert "Made on: " in (repo / "metrics/results.md").read_text()

    out = _run(repo, None, "dvc", "exp", "run", "-f", "-n", "unset")  # -f: every stage computes again
    assert "Running stage 'train@tost'" in out
    assert _records(repo) == by_repro

    run(repo, "git", "checkout", "--", ".")
    run(repo, "dvc", "exp", "remove", "-A")  # so that the sweep finds nothing to reuse ...
    shutil.rmtree(repo / ".dvc" / "cache" / "runs")  # ... and DVC's run-cache nothing to restore
    out = _run(repo, "3", sys.executable, "-m", "sweep", "--poll", "1")
    assert "1 found" not in out and "0 found, 1 to run" in out
    (exp,) = dvc.parse_exp_show(run(repo, "dvc", "exp", "show", "--json").stdout)
    assert _records(repo, exp.rev) == by_repro
