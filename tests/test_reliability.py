"""Nothing lost, nothing silent: kill and resume, atomic writes, safe loading, one-line errors."""

from __future__ import annotations

import dataclasses
import errno
import json
import logging
import os
import pickle
import re
import signal
import subprocess
import sys
import time
import urllib.error
from pathlib import Path

import pytest
import torch
import yaml

import tost.datasets.cifar as cifar
import tost.io
from stages import data as data_stage
from stages import mask as mask_stage
from stages import train as train_stage
from stages._common import run_stage
from tests import test_methods_contract as contract
from tests.test_config import _set
from tost import config, data
from tost.errors import CheckpointError, TostError, TrainingError
from tost.io import atomic_path, load_tensors, save_tensors, write_json
from tost.models import build
from tost.resume import ResumeDir
from tost.runtime import Runtime
from tost.sparsity.mask import FORMAT, Enforcer, Mask, prunable
from tost.sparsity.methods import METHODS, gmp, lt
from tost.train import Trainer, fit

ROOT = Path(__file__).resolve().parents[1]


class Boom:
    """A pickle payload that would run a shell command when unpickled."""

    def __reduce__(self):
        return (os.system, ("touch pwned",))


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


# -- the train stage as a real process ------------------------------------------------------------------


def _workdir(
    tmp_path: Path,
    monkeypatch,
    raw_params: dict,
    epochs: int,
    width: int = 8,
    mask: bool = True,
    train_images: int | None = None,
) -> Path:
    """A repo-like folder with params.yaml, the digits data (optionally fewer training images) and a mask."""
    raw_params["model"]["width"] = width
    # CPU even where a GPU is present: resumed runs are compared bit for bit, which cuDNN need not give.
    raw_params["train"].update(epochs=epochs, batch_size=32, device="cpu")
    raw_params["tricks"]["run"] = ["baseline"]
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw_params))
    monkeypatch.chdir(tmp_path)
    data_stage.main(["--out", "artifacts/data", "--metrics", "metrics/data.json"])
    if train_images is not None:
        full = data.load_prepared(Path("artifacts/data"))
        cut = data.Split(full.train.x[:train_images], full.train.y[:train_images])
        data.save_prepared(dataclasses.replace(full, train=cut), Path("artifacts/data"))
    if mask:
        mask_stage.main(_mask_args("artifacts"))
    return tmp_path


def _mask_args(run: str, resume: str | None = None) -> list[str]:
    """The mask stage's arguments, writing mask.pt, init.pt and mask.json under `run`."""
    args = ["--data", "artifacts/data", "--mask", f"{run}/mask.pt", "--init", f"{run}/init.pt",
            "--metrics", f"{run}/mask.json"]  # fmt: skip
    return [*args, "--resume", resume] if resume else args


def _train_cmd(run: str) -> list[str]:
    return [
        sys.executable, "-m", "stages.train", "baseline", "--data", "artifacts/data",
        "--mask", "artifacts/mask.pt", "--init", "artifacts/init.pt", "--ckpt", f"{run}/ckpt.pt",
        "--metrics", f"{run}/metrics.json", "--curve", f"{run}/curve.csv", "--resume", f"{run}/resume.pt",
    ]  # fmt: skip


def _env() -> dict[str, str]:
    # One thread: on a busy 2-core machine, OpenMP threads waiting for each other made an epoch 100x
    # slower. Runs whose results are compared must use the same count (see `_one_thread`).
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


@pytest.fixture(autouse=True)
def _one_thread():
    """In-process runs use one thread too: as fast, and comparable with the subprocesses of `_env`."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_sigkill_mid_training_then_rerun_matches_uninterrupted(tmp_path, monkeypatch, raw_params):
    work = _workdir(tmp_path, monkeypatch, raw_params, epochs=6)
    subprocess.run(_train_cmd("full"), cwd=work, env=_env(), check=True, capture_output=True, timeout=300)

    proc = subprocess.Popen(_train_cmd("killed"), cwd=work, env=_env(), stdout=subprocess.PIPE, text=True)
    resume = work / "killed" / "resume.pt"
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

    out = subprocess.run(_train_cmd("killed"), cwd=work, env=_env(), check=True, capture_output=True,
                         text=True, timeout=300)  # fmt: skip
    assert f"resumed after epoch {epochs_done}" in out.stdout
    full = json.loads((work / "full" / "metrics.json").read_text())
    resumed = json.loads((work / "killed" / "metrics.json").read_text())
    for key in ("test_acc", "final_test_acc", "best_val_acc", "best_epoch", "final_train_loss", "sparsity"):
        assert resumed[key] == full[key], key
    a = load_tensors(work / "full" / "ckpt.pt")["state_dict"]
    b = load_tensors(work / "killed" / "ckpt.pt")["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)  # bit-identical on the CPU
    assert not resume.exists()


def test_sigkill_mid_lottery_ticket_then_rerun_matches_uninterrupted(tmp_path, monkeypatch, raw_params):
    raw_params["prune"].update(method="lt", rounds=2, pretrain_epochs=3, sparsity=0.5)
    work = _workdir(tmp_path, monkeypatch, raw_params, epochs=1, width=4, mask=False, train_images=256)
    mask_stage.main(_mask_args("full", "full/resume"))  # the uninterrupted run (resume on, never used)
    assert not (work / "full" / "resume").exists()  # emptied once the outputs were written

    cmd = [sys.executable, "-m", "stages.mask", *_mask_args("killed", "killed/resume")]
    proc = subprocess.Popen(cmd, cwd=work, env=_env(), stdout=subprocess.PIPE, text=True)
    resume = work / "killed" / "resume"
    second = resume / "lt-round-2-2.pt"  # round 2's per-epoch file: round 1 is finished by then
    deadline = time.time() + 120
    while not second.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.005)
    assert proc.poll() is None, "the mask stage finished before it could be killed; make it longer"
    time.sleep(0.05)  # inside round 2's next epoch
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (work / "killed" / "mask.pt").exists()
    assert load_tensors(resume / "lt-rounds.pt")["round"] == 1
    epochs_done = load_tensors(second)["epoch"]
    assert 1 <= epochs_done < 3

    out = subprocess.run(cmd, cwd=work, env=_env(), check=True, capture_output=True, text=True, timeout=120)
    assert "lt: rounds 1-1 of 2 already done" in out.stdout
    assert f"lt[round 2/2]: resumed after epoch {epochs_done}" in out.stdout
    for name in ("mask.pt", "init.pt"):  # the same bytes: same tensors, saved deterministically
        assert (work / "killed" / name).read_bytes() == (work / "full" / name).read_bytes(), name
    full = json.loads((work / "full" / "mask.json").read_text())
    resumed = json.loads((work / "killed" / "mask.json").read_text())
    assert {k: v for k, v in resumed.items() if k != "seconds"} == {
        k: v for k, v in full.items() if k != "seconds"
    }
    assert len(full["lt_rounds"]) == 2
    assert not resume.exists()


class Crash(Exception):
    """Stands for a kill after an epoch's hook ran but before its resume file was written."""


def _training(resume: ResumeDir | None, crash_at: int | None = None, trained: list | None = None):
    """`PruneContext.train` as the mask stage builds it (resume file per run name), crashing on request.

    `trained` collects every epoch that ran, e.g. `lt[round 2/2] 3`.
    """
    p, done = contract._params(), [0]

    def train(net, mask, epochs, name, on_epoch_end=None):
        def hook(trainer) -> None:
            if on_epoch_end is not None:
                on_epoch_end(trainer)
            done[0] += 1
            if trained is not None:
                trained.append(f"{name} {trainer.epoch}")
            if done[0] == crash_at:
                raise Crash

        cfg = dataclasses.replace(p.train, epochs=epochs)
        path, run_id = (resume.path(name), resume.fingerprint) if resume else (None, "")
        return fit(net, mask, contract.DATA, p.data, cfg, [], Runtime.cpu(), 0, name=name, on_epoch_end=hook,
                   resume=path, fingerprint=run_id)  # fmt: skip

    return train


@pytest.mark.parametrize(
    ("method", "options", "crash_at"),
    [("magnitude", None, 2), ("gmp", gmp.Options(start=0.0, end=1.0), 2), ("lt", lt.Options(0), 5),
     ("lt", lt.Options(1), 2)],
    ids=["magnitude", "gmp", "lt-round-2", "lt-rewind-round-1"],
)  # fmt: skip
def test_mask_methods_that_train_resume_to_the_uninterrupted_result(tmp_path, method, options, crash_at):
    def run(train, resume=None):
        ctx = contract.make_ctx(sparsity=0.7, rounds=2, pretrain_epochs=3, train=train, resume=resume)
        return METHODS[method].find_mask(ctx, options), ctx

    full, full_ctx = run(_training(None))
    resume = ResumeDir(tmp_path / "resume", "run")
    with pytest.raises(Crash):
        run(_training(resume, crash_at), resume)
    assert any(resume.root.iterdir())
    epochs = []
    mask, ctx = run(_training(resume, trained=epochs), resume)
    total = 6 if method == "lt" else 3
    assert len(epochs) == total - (crash_at - 1)  # neither finished epochs nor finished rounds rerun
    assert all(torch.equal(mask.tensors[n], full.tensors[n]) for n in full.tensors)
    assert ctx.info == full_ctx.info
    if full_ctx.rewind_state is not None:
        assert all(torch.equal(ctx.rewind_state[k], v) for k, v in full_ctx.rewind_state.items())


def test_init_from_another_architecture_is_one_line(tmp_path, monkeypatch, raw_params):
    work = _workdir(tmp_path, monkeypatch, raw_params, epochs=1)
    params = yaml.safe_load((work / "params.yaml").read_text())
    params["model"]["arch"] = "vgg16"
    (work / "params.yaml").write_text(yaml.safe_dump(params))
    proc = subprocess.run(_train_cmd("x"), cwd=work, env=_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("error: artifacts/init.pt: does not fit model.arch=vgg16 width=8: ")
    assert "missing" in lines[0]
    assert not (work / "x").exists()


# -- bad input: exit code 2, one readable line, nothing written ------------------------------------------


def _one_line(proc: subprocess.CompletedProcess) -> str:
    """What a stage must do with a user mistake: exit 2 with a single `error:` line and no traceback."""
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ")
    return lines[0]


def _edit_params(work: Path, changes: dict) -> None:
    raw = yaml.safe_load((work / "params.yaml").read_text())
    for dotted, value in changes.items():
        _set(raw, dotted, value)
    (work / "params.yaml").write_text(yaml.safe_dump(raw))


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:100])


SUBPROCESS_CASES = {
    # name: (needs a mask, params changes, damage, stage and arguments, the line must match)
    "unknown-params-key": (
        False, {"train.typo": 1}, None, ["stages.check", "--out", "x/params.ok"],
        r"^error: params\.yaml: train: unknown key\(s\) \['typo'\]",
    ),
    "empty-layer": (
        False, {"prune.sparsity": 0.999}, None, ["stages.mask", *_mask_args("x")],
        r"^error: sparsity 0\.9990 \(global\) would leave layer \S+ \(\d+ weights\).* with no weight; lower",
    ),
    "truncated-mask": (
        True, {}, "artifacts/mask.pt", _train_cmd("x")[2:],
        r"^error: artifacts/mask\.pt: not a readable torch file \(truncated or corrupted\?\)",
    ),
    "non-finite-loss": (
        True, {"train.lr": 1e30}, None, _train_cmd("x")[2:],
        r"^error: train\[baseline\]: loss became non-finite at epoch 1, step \d+; .*train\.lr",
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", list(SUBPROCESS_CASES))
def test_bad_input_through_the_real_stage_is_one_line(tmp_path, monkeypatch, raw_params, case):
    needs_mask, changes, damage, argv, expected = SUBPROCESS_CASES[case]
    work = _workdir(tmp_path, monkeypatch, raw_params, epochs=2, mask=needs_mask, train_images=256)
    _edit_params(work, changes)
    if damage:
        _truncate(work / damage)
    proc = subprocess.run([sys.executable, "-m", *argv], cwd=work, env=_env(), capture_output=True,
                          text=True, timeout=300)  # fmt: skip
    assert re.search(expected, _one_line(proc)), proc.stderr
    assert not (work / "x").exists()  # nothing written, not even a folder


@pytest.fixture
def stage_error(capsys):
    """Run a stage's `main` under `run_stage`, as `python -m stages.<name>` does; return its error line."""
    handlers, level = logging.root.handlers[:], logging.root.level

    def run(main, argv: list[str]) -> str:
        capsys.readouterr()
        with pytest.raises(SystemExit) as exit_info:
            run_stage(lambda: main(argv))
        err = capsys.readouterr().err
        assert exit_info.value.code == 2, err
        lines = err.strip().splitlines()
        assert len(lines) == 1, err
        assert lines[0].startswith("error: ")
        return lines[0]

    yield run
    logging.root.handlers[:] = handlers  # run_stage's basicConfig replaced pytest's handlers
    logging.root.setLevel(level)


def test_cuda_requested_without_gpu_is_one_line(tmp_path, monkeypatch, raw_params, stage_error):
    work = _workdir(tmp_path, monkeypatch, raw_params, epochs=1, mask=False)
    _edit_params(work, {"train.device": "cuda"})
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    line = stage_error(mask_stage.main, _mask_args("x"))
    assert line == "error: train.device=cuda but no CUDA GPU is visible; use train.device=auto or cpu"
    assert not (work / "x").exists()


def test_prune_batch_size_larger_than_the_data_names_its_key(tmp_path, monkeypatch, raw_params, stage_error):
    work = _workdir(tmp_path, monkeypatch, raw_params, epochs=1, mask=False)
    _edit_params(work, {"prune.batch_size": 100_000})
    line = stage_error(mask_stage.main, _mask_args("x"))
    assert line.startswith("error: params.yaml: prune.batch_size=100000 is larger than the training split")
    assert not (work / "x").exists()


def test_dataset_missing_without_network_is_one_line(tmp_path, monkeypatch, raw_params, stage_error):
    raw_params["data"].update(name="cifar10", root=str(tmp_path / "raw"), download=True)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw_params))
    monkeypatch.chdir(tmp_path)

    def offline(*_a, **_k):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(cifar, "download_and_extract_archive", offline)
    line = stage_error(data_stage.main, ["--out", "artifacts/data", "--metrics", "metrics/data.json"])
    assert "cifar-10-python.tar.gz: download failed" in line
    assert str(tmp_path / "raw") in line
    assert not (tmp_path / "artifacts").exists()
    assert not (tmp_path / "metrics").exists()


def _bad_masks(good: Path) -> dict[str, tuple[dict, str]]:
    """Mask files the train stage must refuse, and the fragment its error line must hold."""
    masks = Mask.load(good)[0].tensors
    first = next(iter(masks))
    other = Mask.ones(prunable(build("vgg16", 10, (1, 8, 8), 8))).tensors
    wrap = {"format": FORMAT, "meta": {}}
    return {
        "another-arch": ({**wrap, "masks": other}, "unknown entries"),
        "non-binary": ({**wrap, "masks": {**masks, first: masks[first].float() * 0.5}}, "neither 0 nor 1"),
        "mis-shaped": ({**wrap, "masks": {**masks, first: masks[first].reshape(-1)}}, "has shape"),
    }


@pytest.mark.parametrize("case", ["another-arch", "non-binary", "mis-shaped"])
def test_train_stage_refuses_a_bad_mask_in_one_line(tmp_path, monkeypatch, raw_params, stage_error, case):
    work = _workdir(tmp_path, monkeypatch, raw_params, epochs=1)
    obj, fragment = _bad_masks(work / "artifacts" / "mask.pt")[case]
    torch.save(obj, work / "artifacts" / "mask.pt")
    line = stage_error(train_stage.main, _train_cmd("x")[3:])
    assert fragment in line
    assert not (work / "x").exists()


def _full_disk(real_open, budget: int = 100):
    """`open` whose files fail like a full disk once `budget` bytes are written."""

    class FullDiskFile:
        def __init__(self, f) -> None:
            self.f, self.left = f, budget

        def write(self, b) -> int:
            if len(b) > self.left:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            self.left -= len(b)
            return self.f.write(b)

        def __getattr__(self, name):
            return getattr(self.f, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc) -> None:
            self.f.close()

    return lambda path, mode="r", *a, **k: FullDiskFile(real_open(path, mode, *a, **k))


def test_disk_full_keeps_the_old_file_and_is_one_line(tmp_path, monkeypatch, raw_params, stage_error):
    work = _workdir(tmp_path, monkeypatch, raw_params, epochs=1, mask=False)
    out = work / "artifacts" / "data"
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    _edit_params(work, {"seed": 1})  # different splits: every file would change
    monkeypatch.setattr(tost.io, "open", _full_disk(open), raising=False)
    line = stage_error(data_stage.main, ["--out", "artifacts/data", "--metrics", "metrics/data.json"])
    assert line == "error: cannot write artifacts/data/train.pt: No space left on device"
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # old files intact, no temporaries


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


# -- the mask is sacred; non-finite loss; gradient clipping ---------------------------------------------


def test_unenforced_mask_fails_the_train_stage_and_writes_nothing(
    tmp_path, monkeypatch, raw_params, stage_error
):
    work = _workdir(tmp_path, monkeypatch, raw_params, epochs=1, train_images=256)
    monkeypatch.setattr(Enforcer, "__call__", lambda self: None)  # a broken enforcement
    line = stage_error(train_stage.main, _train_cmd("x")[3:])
    assert re.fullmatch(r"error: train\[baseline\]: \d+ pruned weights of \S+ are not 0 after training", line)
    assert not (work / "x" / "metrics.json").exists()
    assert not (work / "x" / "ckpt.pt").exists()
    assert not (work / "x" / "curve.csv").exists()


def _tiny_run(raw_params, **train):
    raw_params["train"].update(epochs=3, batch_size=16, eval_batch_size=64, lr=0.05, **train)
    p = config.parse(raw_params)
    torch.manual_seed(0)
    net = build("resnet20", 4, (1, 8, 8), 4)
    return p, net, Mask.ones(prunable(net))


def test_non_finite_loss_stops_naming_the_step_and_keeps_the_last_good_epoch(tmp_path, raw_params, tiny_data):
    p, net, mask = _tiny_run(raw_params)
    resume = tmp_path / "resume.pt"

    def poison(trainer) -> None:  # from epoch 2 on, every loss is NaN
        trainer.loss = lambda logits, *_: logits.sum() * float("nan")

    with pytest.raises(TrainingError, match=r"loss became non-finite at epoch 2, step 1; the last good"):
        fit(net, mask, tiny_data, p.data, p.train, [], Runtime.cpu(), 0, resume=resume, fingerprint="run",
            on_epoch_end=poison)  # fmt: skip
    kept = load_tensors(resume)
    assert kept["epoch"] == 1
    assert all(bool(torch.isfinite(v).all()) for v in kept["model"].values() if v.is_floating_point())


@pytest.mark.parametrize("max_norm", [0.0, 0.05])
def test_max_grad_norm_clips_the_global_gradient_norm(raw_params, tiny_data, max_norm):
    p, net, mask = _tiny_run(raw_params, max_grad_norm=max_norm)
    trainer = Trainer(net, mask, tiny_data, p.data, p.train, [], Runtime.cpu(), 0)
    norms = []

    def record(opt, *_):
        grads = [q.grad for group in opt.param_groups for q in group["params"] if q.grad is not None]
        norms.append(float(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads]))))

    trainer.opt.register_step_pre_hook(record)
    trainer.run_epoch()
    assert len(norms) == trainer.train_loader.num_images // 16
    if max_norm:
        assert max(norms) <= max_norm * (1 + 1e-5)
    else:
        assert max(norms) > 0.05  # unclipped gradients are larger: the bound above is not vacuous
