"""The executors' bookkeeping against scripted answers (tests/sweep/test_slurm.py runs a real SLURM)."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sweep import slurm
from sweep.executor import LocalQueue, Order, cores, default_jobs, worker_env
from sweep.slurm import GONE, Slurm, Submission
from tests.conftest import repo_params
from tests.sweep.fakes import FakeDvc
from tost import config
from tost.errors import TostError


def slurm_cfg(**changes) -> config.SlurmConfig:
    raw = repo_params()["report"]["slurm"] | changes
    return config.build(config.SlurmConfig, raw, "report.slurm")


class FakeSlurm:
    """Answers sbatch with job ids and squeue from a script of successive listings."""

    def __init__(self, listings: list[list[str]]):
        self.listings = listings
        self.calls: list[list[str]] = []

    def __call__(self, cmd):
        self.calls.append(list(cmd))
        if cmd[0] == "sbatch":
            return subprocess.CompletedProcess(cmd, 0, f"{100 + len(self.calls)}\n", "")
        if cmd[0] == "squeue":
            rows = self.listings.pop(0) if len(self.listings) > 1 else self.listings[0]
            if rows is None:
                return subprocess.CompletedProcess(
                    cmd, 1, "", "slurm_load_jobs error: Invalid job id specified"
                )
            return subprocess.CompletedProcess(cmd, 0, "\n".join(rows), "")
        return subprocess.CompletedProcess(cmd, 0, "", "")


def submission(tmp_path: Path, tasks: dict[str, list[str]]) -> Submission:
    for sub in ("cells", "logs"):
        (tmp_path / sub).mkdir(exist_ok=True)
    return Submission(tmp_path, tasks=tasks, jobs=sorted({t.split("_")[0] for t in tasks}))


def result(sub: Submission, name: str, rc: int, log: str = "") -> None:
    (sub.folder / "cells" / f"{name}.json").write_text(json.dumps({"rc": rc}))
    (sub.folder / "cells" / f"{name}.log").write_text(log)


def test_cpus_per_task_follow_train_threads_unless_set():
    """`cpus: 0` (the default): train.threads for each experiment a job runs at once."""
    assert slurm.with_cpus(slurm_cfg(), threads=1, per_gpu=1).cpus == 1
    assert slurm.with_cpus(slurm_cfg(), threads=4, per_gpu=3).cpus == 4  # a CPU job runs one experiment
    assert slurm.with_cpus(slurm_cfg(gpus=2), threads=4, per_gpu=3).cpus == 24  # 2 GPUs x 3 experiments
    assert slurm.with_cpus(slurm_cfg(cpus=6), threads=4, per_gpu=1).cpus == 6  # set: kept


def test_experiments_at_once_default_to_the_cores_at_train_threads_each():
    assert [default_jobs(t, 8) for t in (1, 2, 3, 8, 16)] == [8, 4, 2, 1, 1]
    assert cores() >= 1


def test_sbatch_options_follow_report_slurm():
    assert slurm.sbatch_options(slurm_cfg(cpus=1)) == ["--cpus-per-task=1"]
    opts = slurm.sbatch_options(
        slurm_cfg(gpus=1, cpus=8, mem="32G", time="1-00:00:00", partition="gpu", qos="x")
    )
    assert opts == [
        "--cpus-per-task=8",
        "--gres=gpu:1",
        "--partition=gpu",
        "--mem=32G",
        "--time=1-00:00:00",
        "--qos=x",
    ]


@pytest.mark.parametrize(
    ("key", "value"), [("mem", "16 G"), ("time", "2h"), ("partition", "a b"), ("gpus", -1)]
)
def test_report_slurm_values_sbatch_would_misread_are_refused(key, value):
    with pytest.raises(config.ConfigError, match=f"report.slurm.{key}"):
        slurm_cfg(**{key: value})


def test_a_gpu_job_runs_gpus_times_per_gpu_experiments(tmp_path, monkeypatch):
    fake = FakeSlurm([[]])
    monkeypatch.setattr(slurm, "snapshot", lambda root, run_cmd: {})
    orders = [Order(f"c{i}", ("-S", f"seed={i}"), lead=i < 2) for i in range(7)]
    ex = Slurm(slurm_cfg(gpus=2, max_running=3), per_gpu=2, root=tmp_path, run_cmd=fake)
    sub = ex.submit(Submission(ex._folder()), orders)
    lead, rest = [c for c in fake.calls if c[0] == "sbatch"]
    assert "--array=0-0%3" in lead and "--array=0-1%3" in rest  # 2 leads in one task, 5 others in two
    assert f"--dependency=afterany:{sub.jobs[0]}" in rest and not any("dependency" in a for a in lead)
    assert list(sub.tasks.values()) == [["c0", "c1"], ["c2", "c3", "c4", "c5"], ["c6"]]
    spec = json.loads((sub.folder / "spec.json").read_text())
    assert [[c["name"] for c in t] for t in spec["arrays"]["rest"]] == [["c2", "c3", "c4", "c5"], ["c6"]]


def test_states_follow_squeue_then_the_result_files(tmp_path, caplog):
    sub = submission(tmp_path, {"7_0": ["a"], "7_1": ["b"], "8_0": ["c"], "8_1": ["d"]})
    (tmp_path / "logs" / "7_1.out").write_text("start\n*** JOB 9 ON vm CANCELLED AT 12:00 ***\n")
    fake = FakeSlurm(
        [
            ["7_0|PENDING", "7_1|PENDING", "8_0|PENDING", "8_1|PENDING"],
            ["7_0|RUNNING", "7_1|RUNNING", "8_0|PENDING"],  # 8_1 cancelled while pending: gone
            ["7_0|COMPLETED", "7_1|CANCELLED", "8_0|RUNNING"],
            None,  # squeue has forgotten every job
        ]
    )
    ex = Slurm(slurm_cfg(), 1, tmp_path, poll=0, run_cmd=fake, sleep=lambda _: None)
    # the jobs write their result files before they end: a's before squeue says COMPLETED, c's before it ends
    polls = iter([lambda: result(sub, "a", 0), lambda: result(sub, "c", 1, "boom\nKeyError: x\n")])

    def sleep(_):
        if (step := next(polls, None)) is not None:
            step()

    ex.sleep = sleep
    result_after_first = ex.states(sub)
    assert result_after_first["7_0"] == "PENDING"
    with caplog.at_level(logging.INFO, logger="sweep"):
        failures = {f.name: f for f in ex.wait(sub, ["a", "b", "c", "d"])}
    assert set(failures) == {"b", "c", "d"}
    assert failures["b"].state == "CANCELLED" and failures["b"].last_line.startswith("*** JOB 9")
    assert failures["c"].state == "FAILED (exit 1)" and failures["c"].last_line == "KeyError: x"
    assert failures["c"].log.endswith("cells/c.log") and failures["b"].log.endswith("logs/7_1.out")
    assert failures["d"].state == GONE and failures["d"].job == "SLURM job 8_1"
    lines = [r.getMessage() for r in caplog.records if "SLURM:" in r.getMessage()]
    assert len(lines) == len(set(line.split(" (")[0] for line in lines))  # one line per change of counts
    assert lines[-1].startswith("table: SLURM: 0 queued, 0 running, 1 done, 3 failed")


def test_a_failed_experiment_in_a_cancelled_job_reports_the_cancellation(tmp_path):
    sub = submission(tmp_path, {"5_0": ["a"]})
    result(sub, "a", -15, "Terminated")  # the job's own process wrote it while SLURM was killing the job
    (tmp_path / "logs" / "5_0.out").write_text("*** JOB 5 ON vm CANCELLED AT 12:00 ***\n")
    state, failure = Slurm(slurm_cfg(), 1, tmp_path).cell(sub, "a", {"5_0": "CANCELLED"})
    assert state == "failed" and failure.state == "CANCELLED"


def test_interrupting_the_wait_cancels_exactly_our_jobs(tmp_path, monkeypatch, caplog):
    fake = FakeSlurm([["101_0|RUNNING"]])
    monkeypatch.setattr(slurm, "snapshot", lambda root, run_cmd: {})
    monkeypatch.setattr(slurm.shutil, "which", lambda tool: f"/usr/bin/{tool}")

    def interrupt(_):
        raise KeyboardInterrupt

    ex = Slurm(slurm_cfg(), 1, tmp_path, run_cmd=fake, sleep=interrupt)
    with pytest.raises(KeyboardInterrupt), caplog.at_level(logging.INFO, logger="sweep"):
        ex.run([Order("a", ()), Order("b", ())])
    assert fake.calls[-1] == ["scancel", "103"]  # the one job submitted (calls 1-2: the checks)
    assert "cancelled SLURM job(s) 103" in caplog.text


def test_a_second_sweep_refuses_while_the_first_ones_jobs_are_queued(tmp_path, monkeypatch):
    monkeypatch.setattr(slurm.shutil, "which", lambda tool: f"/usr/bin/{tool}")
    rows = [
        f"55|tost-rest|{tmp_path}",
        "56|tost-rest|/elsewhere",
        f"57|train|{tmp_path}",
        f"58|tost-lead|{tmp_path}",
    ]
    fake = FakeSlurm([rows])
    with pytest.raises(TostError, match=r"job\(s\) 55, 58 of an earlier sweep of this checkout"):
        Slurm(slurm_cfg(), 1, tmp_path, run_cmd=fake).check()
    assert not [c for c in fake.calls if c[0] == "sbatch" and "--test-only" not in c]


def test_the_local_queue_names_a_failed_experiment_with_its_logs_last_line():
    fake = FakeDvc([{"a": "Running"}, {"a": "Failed"}])
    answers = {("queue", "logs"): "Running stage 'train'\nerror: out of memory\n", ("exp", "show"): "[]"}

    def dvc(args, env=None):
        return answers.get(tuple(args[:2])) or fake(args)

    queue = LocalQueue(1, 1, poll=0, run_dvc=dvc, start=lambda jobs, env: None, sleep=lambda _: None)
    failures = queue.run([Order("a", ("-S", "seed=1"))])
    assert [f.line() for f in failures] == [
        "a: DVC queue task Failed; log `dvc queue logs a`: error: out of memory"
    ]


def test_queue_workers_find_this_environments_dvc():
    assert worker_env(2, 1)["PATH"].split(os.pathsep)[0] == str(Path(sys.executable).parent)


def test_a_failed_second_submission_cancels_the_first(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(slurm, "snapshot", lambda root, run_cmd: {})
    monkeypatch.setattr(slurm.shutil, "which", lambda tool: f"/usr/bin/{tool}")
    fake = FakeSlurm([[]])

    def sbatch_fails_second(cmd):
        if cmd[0] == "sbatch" and any(a.startswith("--dependency") for a in cmd):
            return subprocess.CompletedProcess(cmd, 1, "", "sbatch: error: QOSMaxSubmitJobPerUserLimit")
        return fake(cmd)

    with pytest.raises(TostError, match="QOSMaxSubmitJobPerUserLimit"):
        Slurm(slurm_cfg(), 1, tmp_path, run_cmd=sbatch_fails_second).run(
            [Order("a", (), True), Order("b", ())]
        )
    assert fake.calls[-1] == ["scancel", "103"]  # the leads' array, submitted before the failure


def test_a_failing_squeue_is_waited_out(tmp_path):
    sub = submission(tmp_path, {"7_0": ["a"]})
    answers = iter(
        [
            subprocess.CompletedProcess([], 0, "7_0|RUNNING", ""),
            subprocess.CompletedProcess([], 1, "", "squeue: error: Socket timed out on send/recv operation"),
        ]
    )
    ex = Slurm(slurm_cfg(), 1, tmp_path, run_cmd=lambda cmd: next(answers))
    first = ex.states(sub)
    assert ex.cell(sub, "a", first) == ("running", None)
    assert ex.states(sub) == {"7_0": "RUNNING"}  # what was known, not an error
