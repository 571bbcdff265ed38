"""Nothing lost, nothing silent: kill and resume, atomic writes, safe loading, one-line errors."""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from stages import data as data_stage
from stages import mask as mask_stage
from tost.errors import CheckpointError, TostError
from tost.io import atomic_path, load_tensors, save_tensors, write_json

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


def _workdir(tmp_path: Path, monkeypatch, raw_params: dict, epochs: int) -> Path:
    raw_params["model"]["width"] = 8
    raw_params["train"].update(epochs=epochs, batch_size=32)
    raw_params["tricks"]["run"] = ["baseline"]
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw_params))
    monkeypatch.chdir(tmp_path)
    data_stage.main(["--out", "artifacts/data", "--metrics", "metrics/data.json"])
    mask_stage.main(
        ["--data", "artifacts/data", "--mask", "artifacts/mask.pt", "--init", "artifacts/init.pt",
         "--metrics", "metrics/mask.json"]
    )  # fmt: skip
    return tmp_path


def _train_cmd(run: str) -> list[str]:
    return [
        sys.executable, "-m", "stages.train", "baseline", "--data", "artifacts/data",
        "--mask", "artifacts/mask.pt", "--init", "artifacts/init.pt", "--ckpt", f"{run}/ckpt.pt",
        "--metrics", f"{run}/metrics.json", "--curve", f"{run}/curve.csv", "--resume", f"{run}/resume.pt",
    ]  # fmt: skip


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT)}


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
