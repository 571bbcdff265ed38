"""Nothing lost: a killed stage, rerun, ends as an uninterrupted run would, bit for bit on the CPU."""

from __future__ import annotations

import dataclasses
import json
import logging
import signal
import subprocess
import sys

import pandas as pd
import pytest
import torch

from stages import dense as dense_stage
from stages import mask as mask_stage
from stages import train as train_stage
from tests.conftest import same_tensors
from tests.sparsity.contexts import make_ctx
from tests.stages.conftest import edit_params, env, kill_env, mask_args, train_cmd, workdir
from tost import data, models
from tost.io import load_tensors
from tost.resume import ResumeDir
from tost.sparsity.mask import Mask
from tost.sparsity.methods import METHODS, gmp, lt
from tost.train import Trainer


def test_sigkill_mid_training_then_rerun_matches_uninterrupted(tmp_path, monkeypatch, raw_params):
    work = workdir(tmp_path, monkeypatch, raw_params, epochs=4, width=4, train_images=256)
    subprocess.run(train_cmd("full"), cwd=work, env=env(), check=True, capture_output=True, timeout=300)

    resume = work / "killed" / "resume" / "train-baseline.pt"
    killer = kill_env(resume.name, nth=2)
    proc = subprocess.run(train_cmd("killed"), cwd=work, env=killer, capture_output=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr  # in epoch 3, after epoch 2's resume file
    assert not (work / "killed" / "metrics.json").exists()
    epochs_done = load_tensors(resume)["epoch"]
    assert epochs_done == 2

    out = subprocess.run(train_cmd("killed"), cwd=work, env=env(), check=True, capture_output=True,
                         text=True, timeout=300)  # fmt: skip
    assert f"resumed after epoch {epochs_done}" in out.stdout
    full = json.loads((work / "full" / "detail.json").read_text())
    resumed = json.loads((work / "killed" / "detail.json").read_text())
    for key in ("test_acc", "final_test_acc", "best_val_acc", "best_epoch", "final_train_loss", "sparsity"):
        assert resumed[key] == full[key], key
    a = load_tensors(work / "full" / "ckpt.pt")["state_dict"]
    b = load_tensors(work / "killed" / "ckpt.pt")["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)  # bit-identical on the CPU
    assert not resume.exists()

    # Killed between its outputs (the checkpoint written, the metrics not): the last resume file (epoch 3;
    # the last epoch is not saved, the outputs follow it) outlived the training, so nothing is lost.
    late = kill_env("ckpt.pt", forwards=0)
    proc = subprocess.run(train_cmd("late"), cwd=work, env=late, capture_output=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert (work / "late" / "ckpt.pt").exists() and not (work / "late" / "metrics.json").exists()
    assert load_tensors(work / "late" / "resume" / "train-baseline.pt")["epoch"] == 3
    out = subprocess.run(train_cmd("late"), cwd=work, env=env(), check=True, capture_output=True, text=True,
                         timeout=300)  # fmt: skip
    assert "resumed after epoch 3" in out.stdout
    assert (work / "late" / "ckpt.pt").read_bytes() == (work / "full" / "ckpt.pt").read_bytes()
    assert _untimed(work / "late" / "detail.json") == _untimed(work / "full" / "detail.json")
    curves = [
        pd.read_csv(work / run / "curve.csv").drop(columns=list(CURVE_TIMING)) for run in ("late", "full")
    ]
    pd.testing.assert_frame_equal(*curves, check_exact=True)
    assert not (work / "late" / "resume").exists()


def test_sigkill_mid_lottery_ticket_then_rerun_matches_uninterrupted(tmp_path, monkeypatch, raw_params):
    raw_params["prune"].update(method="lt", rounds=3, sparsity=0.5)
    work = workdir(tmp_path, monkeypatch, raw_params, epochs=1, width=4, mask=False, train_images=256,
                   dense_epochs=3)  # fmt: skip
    mask_stage.main(mask_args("full", "full/resume"))  # the uninterrupted run (resume on, never used)
    assert not (work / "full" / "resume").exists()  # emptied once the outputs were written

    cmd = [sys.executable, "-m", "stages.mask", *mask_args("killed", "killed/resume")]
    resume = work / "killed" / "resume"
    third = resume / "lt-round-3-3.pt"  # round 3's per-epoch file: rounds 1 (dense) and 2 are done
    proc = subprocess.run(cmd, cwd=work, env=kill_env(third.name), capture_output=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr  # in round 3's second epoch
    assert not (work / "killed" / "mask.pt").exists()
    assert load_tensors(resume / "lt-rounds.pt")["round"] == 2
    epochs_done = load_tensors(third)["epoch"]
    assert epochs_done == 1

    out = subprocess.run(cmd, cwd=work, env=env(), check=True, capture_output=True, text=True, timeout=120)
    assert "lt: rounds 1-2 of 3 already done" in out.stdout
    assert f"lt[round 3/3]: resumed after epoch {epochs_done}" in out.stdout
    for name in ("mask.pt", "init.pt"):  # the same bytes: same tensors, saved deterministically
        assert (work / "killed" / name).read_bytes() == (work / "full" / name).read_bytes(), name
    full = json.loads((work / "full" / "mask-detail.json").read_text())
    resumed = json.loads((work / "killed" / "mask-detail.json").read_text())
    assert {k: v for k, v in resumed.items() if k != "seconds"} == {
        k: v for k, v in full.items() if k != "seconds"
    }
    assert len(full["lt_rounds"]) == 3
    assert not resume.exists()


class Crash(Exception):
    """Stands for a kill after an epoch's hook ran but before its resume file was written."""


def crashing(ctx, crash_at: int | None = None, trained: list | None = None):
    """`ctx` whose train function (the mask stage's own) crashes after epoch `crash_at` of the method.

    `trained` collects every epoch that ran, e.g. `lt[round 2/2] 3`.
    """
    done, real = [0], ctx.train

    def train(net, mask, epochs, name, on_epoch_end=None):
        def hook(trainer) -> None:
            if on_epoch_end is not None:
                on_epoch_end(trainer)
            done[0] += 1
            if trained is not None:
                trained.append(f"{name} {trainer.epoch}")
            if done[0] == crash_at:
                raise Crash

        return real(net, mask, epochs, name, hook)

    return dataclasses.replace(ctx, train=train)


@pytest.mark.parametrize(
    ("method", "options", "crash_at"),
    [("gmp", gmp.Options(start=0.0, end=1.0), 2), ("lt", lt.Options(0), 5), ("lt", lt.Options(1), 2)],
    ids=["gmp", "lt-round-3", "lt-rewind-round-1"],
)  # fmt: skip
def test_mask_methods_that_train_resume_to_the_uninterrupted_result(tmp_path, method, options, crash_at):
    def run(resume=None, **crash):
        ctx = make_ctx(sparsity=0.7, rounds=3, dense_epochs=3, resume=resume)
        return METHODS[method].find_mask(crashing(ctx, **crash), options)

    full = run()
    resume = ResumeDir(tmp_path / "resume", "run")
    with pytest.raises(Crash):
        run(resume, crash_at=crash_at)
    assert any(resume.root.iterdir())
    epochs = []
    again = run(resume, trained=epochs)
    # lt: 3 rounds of 3 epochs, the first the dense stage's unless it must take a rewind snapshot
    total = 3 if method == "gmp" else (6 if options.rewind_epoch == 0 else 9)
    assert len(epochs) == total - (crash_at - 1)  # neither finished epochs nor finished rounds rerun
    assert same_tensors(again.mask.tensors, full.mask.tensors)
    assert again.info == full.info
    if full.rewind is not None:
        assert all(torch.equal(again.rewind[k], v) for k, v in full.rewind.items())


class Killed(Exception):
    """Stands for a kill in the middle of a stage."""


def _kill_at_epoch(monkeypatch, epoch: int) -> None:
    """Every Trainer of this process stops when it is about to start `epoch` (1-based)."""
    real = Trainer.run_epoch

    def run_epoch(self):
        if self.epoch + 1 == epoch:
            raise Killed
        return real(self)

    monkeypatch.setattr(Trainer, "run_epoch", run_epoch)


def _train_args(run: str, resume: str) -> list[str]:
    return [*train_cmd(run)[3:-2], "--resume", resume]


def _untimed(path) -> dict:
    return {k: v for k, v in json.loads(path.read_text()).items() if k not in TIMING}


def _outputs(work, run: str) -> tuple[dict, dict]:
    detail = json.loads((work / run / "detail.json").read_text())
    untimed = {k: v for k, v in detail.items() if k not in TIMING}
    return load_tensors(work / run / "ckpt.pt")["state_dict"], untimed


TIMING = {"train_seconds", "images_per_s", "wall_seconds", "checkpoint_seconds"}
CURVE_TIMING = {"seconds", "images_per_s", "wall_seconds"}


def _change_lr(work) -> None:
    edit_params(work, {"train.lr": 0.02})


def _change_mask(work) -> None:
    mask, meta = Mask.load(work / "artifacts" / "mask.pt")
    flipped = {n: t.clone() for n, t in mask.tensors.items()}
    name = next(iter(flipped))
    flipped[name].view(-1)[0] = ~flipped[name].view(-1)[0]  # one weight more or less
    Mask(flipped).save(work / "artifacts" / "mask.pt", meta)


def _change_data(work) -> None:
    full = data.load_prepared(work / "artifacts" / "data")
    cut = data.Split(full.train.x[:200], full.train.y[:200])
    data.save_prepared(dataclasses.replace(full, train=cut), work / "artifacts" / "data")


@pytest.mark.parametrize("change", [_change_lr, _change_mask, _change_data], ids=["lr", "mask", "data"])
def test_a_resume_file_of_another_run_is_ignored_and_the_rerun_is_a_fresh_run(
    tmp_path, monkeypatch, raw_params, caplog, change
):
    work = workdir(tmp_path, monkeypatch, raw_params, epochs=4, width=4, train_images=256)
    with monkeypatch.context() as m:
        _kill_at_epoch(m, 3)
        with pytest.raises(Killed):
            train_stage.main(_train_args("killed", "killed/resume"))
    assert load_tensors(work / "killed" / "resume" / "train-baseline.pt")["epoch"] == 2
    change(work)
    caplog.set_level(logging.INFO)
    train_stage.main(_train_args("killed", "killed/resume"))
    assert "is from another run (params or inputs changed); train[baseline] starts over" in caplog.text
    train_stage.main(_train_args("fresh", "fresh/resume"))
    (a, da), (b, db) = _outputs(work, "killed"), _outputs(work, "fresh")
    assert da == db and all(torch.equal(a[k], b[k]) for k in a)
    assert not (work / "killed" / "resume").exists()


def test_a_killed_dense_stage_resumes_and_its_resume_file_outlives_the_training(
    tmp_path, monkeypatch, raw_params, caplog
):
    work = workdir(tmp_path, monkeypatch, raw_params, epochs=1, width=4, mask=False, train_images=256)
    edit_params(work, {"dense.epochs": 4})
    args = lambda out: ["--data", "artifacts/data", "--out", f"{out}/dense", "--metrics", f"{out}/m.json",  # noqa: E731
                        "--detail", f"{out}/d.json", "--resume", f"{out}/resume"]  # fmt: skip
    dense_stage.main(args("full"))
    with monkeypatch.context() as m:  # killed in the third epoch: epochs 1 and 2 are saved
        _kill_at_epoch(m, 3)
        with pytest.raises(Killed):
            dense_stage.main(args("killed"))
    with monkeypatch.context() as m:  # killed after training, while writing trained.pt: nothing lost
        real = models.save_tensors

        def save(path, obj):
            if path.name == "trained.pt":
                raise Killed
            return real(path, obj)

        m.setattr(models, "save_tensors", save)
        caplog.set_level(logging.INFO)
        with pytest.raises(Killed):
            dense_stage.main(args("killed"))
        assert "dense: resumed after epoch 2" in caplog.text
    assert (work / "killed" / "resume" / "dense.pt").exists()  # the training's last save outlived it
    caplog.clear()
    dense_stage.main(args("killed"))
    assert "dense: resumed after epoch 3" in caplog.text  # 4 epochs, the last never saved
    for f in ("init.pt", "trained.pt"):
        assert (work / "killed" / "dense" / f).read_bytes() == (work / "full" / "dense" / f).read_bytes(), f
    assert not (work / "killed" / "resume").exists()
