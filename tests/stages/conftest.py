"""Helpers for running the stages for real: a repo-like working folder, their arguments, their errors."""

from __future__ import annotations

import dataclasses
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from stages import data as data_stage
from stages import dense as dense_stage
from stages import mask as mask_stage
from stages._common import run_stage
from tests.conftest import ROOT, one_error_line, set_key
from tost import data


def workdir(
    tmp_path: Path,
    monkeypatch,
    raw_params: dict,
    epochs: int,
    width: int = 8,
    mask: bool = True,
    train_images: int | None = None,
    dense_epochs: int = 0,
) -> Path:
    """A repo-like folder with params.yaml, the digits data (optionally fewer training images), the dense
    stage's init and a mask."""
    raw_params["model"]["width"] = width
    # CPU even where a GPU is present: resumed runs are compared bit for bit, which cuDNN need not give.
    raw_params["train"].update(epochs=epochs, batch_size=32, device="cpu", checkpoint_every=1)
    raw_params["dense"]["epochs"] = dense_epochs
    raw_params["tricks"]["run"] = ["baseline"]
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw_params))
    monkeypatch.chdir(tmp_path)
    data_stage.main(
        ["--out", "artifacts/data", "--metrics", "metrics/data.json", "--detail", "metrics/detail/data.json"]
    )
    if train_images is not None:
        full = data.load_prepared(Path("artifacts/data"))
        cut = data.Split(full.train.x[:train_images], full.train.y[:train_images])
        data.save_prepared(dataclasses.replace(full, train=cut), Path("artifacts/data"))
    dense_stage.main(dense_args())
    if mask:
        mask_stage.main(mask_args("artifacts"))
    return tmp_path


def dense_args() -> list[str]:
    """The dense stage's arguments, writing artifacts/dense and metrics/{,detail/}dense.json."""
    return ["--data", "artifacts/data", "--out", "artifacts/dense", "--metrics", "metrics/dense.json",
            "--detail", "metrics/detail/dense.json"]  # fmt: skip


def mask_args(run: str, resume: str | None = None) -> list[str]:
    """The mask stage's arguments: artifacts/dense in; mask.pt, init.pt, mask.json (headline) and
    mask-detail.json (the full record) under `run` out."""
    args = ["--data", "artifacts/data", "--dense", "artifacts/dense", "--mask", f"{run}/mask.pt",
            "--init", f"{run}/init.pt", "--metrics", f"{run}/mask.json",
            "--detail", f"{run}/mask-detail.json"]  # fmt: skip
    return [*args, "--resume", resume] if resume else args


def train_cmd(run: str) -> list[str]:
    """`python -m stages.train baseline ...` writing under `run`, its resume files in `run/resume`."""
    return [
        sys.executable, "-m", "stages.train", "baseline", "--data", "artifacts/data",
        "--mask", "artifacts/mask.pt", "--init", "artifacts/init.pt", "--ckpt", f"{run}/ckpt.pt",
        "--metrics", f"{run}/metrics.json", "--detail", f"{run}/detail.json", "--curve", f"{run}/curve.csv",
        "--resume", f"{run}/resume",
    ]  # fmt: skip


def env() -> dict[str, str]:
    """One thread: on a busy 2-core machine, OpenMP threads waiting for each other made an epoch 100x
    slower. Runs whose results are compared must use the same count (see `one_thread`)."""
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


def kill_env(name: str, nth: int = 1, forwards: int = 200) -> dict[str, str]:
    """`env()` for a process that SIGKILLs itself `forwards` module forwards after the `nth` write of a
    file called `name` (tests/killer/sitecustomize.py): a real kill, at the same point every run."""
    path = f"{ROOT / 'tests' / 'killer'}{os.pathsep}{ROOT}"
    return {**env(), "PYTHONPATH": path, "TOST_KILL_AFTER": f"{name}:{nth}:{forwards}"}


@pytest.fixture(autouse=True)
def one_thread():
    """In-process runs use one thread too: as fast, and comparable with the subprocesses of `env`."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def edit_params(work: Path, changes: dict) -> None:
    raw = yaml.safe_load((work / "params.yaml").read_text())
    for dotted, value in changes.items():
        set_key(raw, dotted, value)
    (work / "params.yaml").write_text(yaml.safe_dump(raw))


def one_line(proc: subprocess.CompletedProcess) -> str:
    """The error line of a stage run as a subprocess (see `one_error_line`)."""
    return one_error_line(proc.returncode, proc.stderr)


@pytest.fixture
def stage_error(capsys):
    """Run a stage's `main` under `run_stage`, as `python -m stages.<name>` does; return its error line."""
    handlers, level = logging.root.handlers[:], logging.root.level

    def run(main, argv: list[str]) -> str:
        capsys.readouterr()
        with pytest.raises(SystemExit) as exit_info:
            run_stage(lambda: main(argv))
        return one_error_line(exit_info.value.code, capsys.readouterr().err)

    yield run
    logging.root.handlers[:] = handlers  # run_stage's basicConfig replaced pytest's handlers
    logging.root.setLevel(level)
