"""Nothing lost: a killed stage, rerun, ends as an uninterrupted run would, bit for bit on the CPU."""

from __future__ import annotations

import dataclasses
import json
import signal
import subprocess
import sys
import time

import pytest
import torch

from stages import mask as mask_stage
from tests.sparsity.test_methods_contract import make_ctx
from tests.stages.conftest import env, mask_args, train_cmd, workdir
from tost.io import load_tensors
from tost.resume import ResumeDir
from tost.sparsity.methods import METHODS, gmp, lt


def test_sigkill_mid_training_then_rerun_matches_uninterrupted(tmp_path, monkeypatch, raw_params):
    work = workdir(tmp_path, monkeypatch, raw_params, epochs=6)
    subprocess.run(train_cmd("full"), cwd=work, env=env(), check=True, capture_output=True, timeout=300)

    proc = subprocess.Popen(train_cmd("killed"), cwd=work, env=env(), stdout=subprocess.PIPE, text=True)
    resume = work / "killed" / "resume" / "train-baseline.pt"
    deadline = time.time() + 240
    while not resume.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.005)
    assert proc.poll() is None, "training finished before it could be killed; make it longer"
    time.sleep(0.05)  # well inside the next epoch
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (work / "killed" / "metrics.json").exists()
    epochs_done = load_tensors(resume)["epoch"]
    assert 1 <= epochs_done < 6

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


def test_sigkill_mid_lottery_ticket_then_rerun_matches_uninterrupted(tmp_path, monkeypatch, raw_params):
    raw_params["prune"].update(method="lt", rounds=3, sparsity=0.5)
    work = workdir(tmp_path, monkeypatch, raw_params, epochs=1, width=4, mask=False, train_images=256,
                   dense_epochs=3)  # fmt: skip
    mask_stage.main(mask_args("full", "full/resume"))  # the uninterrupted run (resume on, never used)
    assert not (work / "full" / "resume").exists()  # emptied once the outputs were written

    cmd = [sys.executable, "-m", "stages.mask", *mask_args("killed", "killed/resume")]
    proc = subprocess.Popen(cmd, cwd=work, env=env(), stdout=subprocess.PIPE, text=True)
    resume = work / "killed" / "resume"
    third = resume / "lt-round-3-3.pt"  # round 3's per-epoch file: rounds 1 (dense) and 2 are done
    deadline = time.time() + 120
    while not third.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.005)
    assert proc.poll() is None, "the mask stage finished before it could be killed; make it longer"
    time.sleep(0.05)  # inside round 3's next epoch
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (work / "killed" / "mask.pt").exists()
    assert load_tensors(resume / "lt-rounds.pt")["round"] == 2
    epochs_done = load_tensors(third)["epoch"]
    assert 1 <= epochs_done < 3

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
    assert all(torch.equal(again.mask.tensors[n], full.mask.tensors[n]) for n in full.mask.tensors)
    assert again.info == full.info
    if full.rewind is not None:
        assert all(torch.equal(again.rewind[k], v) for k, v in full.rewind.items())
