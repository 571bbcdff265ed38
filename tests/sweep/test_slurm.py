"""The SLURM executor against a real one-node SLURM (tests/slurm_cluster.py), on a tiny copy of the repo.

Skipped with the reason where the SLURM packages are missing or the tests are not root; `.ci/run`
installs the packages, so CI always runs them.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from sweep import dvc
from tests.conftest import ROOT
from tests.slurm_cluster import Cluster, unavailable
from tests.tinyrepo import copy, env, run, tiny_params

pytestmark = pytest.mark.slow
SWEEP = (sys.executable, "-m", "sweep")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory) -> Cluster:
    if reason := unavailable():
        pytest.skip(reason)
    started = Cluster(tmp_path_factory.mktemp("slurm")).start()
    yield started
    started.stop()


def params() -> dict:
    """Two mask methods, two seeds: the seeds' first experiments run at once, then the two others, which
    take their seed's dense network from the run-cache."""
    raw = tiny_params(yaml.safe_load((ROOT / "params.yaml").read_text()))
    raw["tricks"]["run"] = ["baseline"]
    raw["report"].update(methods=["random", "snip"], seeds=[0, 1], jobs=1)
    return raw


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    return copy(tmp_path_factory.mktemp("slurm-repo"), params())


def sweep(repo: Path, cluster: Cluster, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*SWEEP, "--poll", "0.5", *args],
        cwd=repo,
        env=_env(cluster),
        capture_output=True,
        text=True,
        timeout=600,
    )


def _env(cluster: Cluster) -> dict[str, str]:
    return {**env(), "SLURM_CONF": str(cluster.conf), "OMP_NUM_THREADS": "1"}


def preset(repo: Path, name: str, body: dict) -> str:
    path = repo / "presets" / f"{name}.yaml"
    path.write_text(yaml.safe_dump(body))
    return str(path.relative_to(repo))


def metrics(repo: Path) -> dict[str, dict]:
    """Each experiment's metrics as `dvc exp show` gives them, timings left out (they differ by run)."""
    timing = ("seconds", "images_per_s")
    return {
        e.name: {f: {k: v for k, v in m.items() if not k.endswith(timing)} for f, m in e.metrics.items()}
        for e in dvc.parse_exp_show(run(repo, "dvc", "exp", "show", "--json").stdout)
    }


def test_slurm_experiments_equal_local_ones_bit_for_bit(repo, cluster, tmp_path):
    one_cell = params()
    one_cell["report"].update(methods=["random"], seeds=[0])  # the local side: one experiment will do
    local = copy(tmp_path / "local", one_cell)
    local_run = subprocess.run(  # DVC's local queue, one thread per experiment as in the SLURM jobs
        [*SWEEP, "--poll", "0.5"], cwd=local, env=_env(cluster), capture_output=True, text=True
    )
    assert local_run.returncode == 0, local_run.stdout + local_run.stderr
    got = sweep(repo, cluster, "--executor", "slurm")
    assert got.returncode == 0, got.stdout + got.stderr
    assert "submitted SLURM job" in got.stdout and "queued, 2 running" in got.stdout  # two jobs at once
    assert not (repo / "metrics/table-gain.png").exists()  # baseline alone: no gains to draw
    # every number of the experiment both made, to the last bit; the two jobs that ran at once and
    # pushed into the same checkout each left its own experiment, with its own params
    mine, theirs = metrics(repo), metrics(local)
    (name,) = theirs
    assert mine[name] == theirs[name] and mine[name]["metrics/train/baseline.json"]["test_acc"] > 0
    shown = dvc.parse_exp_show(run(repo, "dvc", "exp", "show", "--json").stdout)
    assert sorted(e.name.split("-")[0] + str(e.params["seed"]) for e in shown) == [
        "random0", "random1", "snip0", "snip1"
    ]  # fmt: skip
    assert all(e.name.startswith(e.params["prune"]["method"]) for e in shown)
    table = pd.read_csv(repo / "metrics/table.csv")
    assert sorted(" ".join(table.experiments).split()) == sorted(mine)
    again = sweep(repo, cluster, "--executor", "slurm")
    assert again.returncode == 0 and "4 found, 0 to run" in again.stdout and "submitted" not in again.stdout
    # each seed's dense network was trained once: by its first experiment; the other took it from the
    # run-cache
    logs = sorted((repo / ".dvc/tmp/tost-slurm").glob("*/cells/*.log"))
    trained = sorted(_cell(log) for log in logs if "Running stage 'dense'" in log.read_text())
    assert len(logs) == 4 and trained == ["random0", "random1"], trained
    assert not any((repo / ".dvc/tmp/tost-slurm").glob("*/work/*"))  # finished workspaces are removed


def test_a_cancelled_job_is_reported_and_a_rerun_submits_only_it(repo, cluster):
    # seed 0 finished (by the first test of the module, or here when this test runs alone): reused below
    first = sweep(repo, cluster, "--executor", "slurm", "--preset",
                  preset(repo, "seed0", {"report": {"methods": ["random"], "seeds": [0]}}))  # fmt: skip
    assert first.returncode == 0, first.stdout + first.stderr
    name = preset(repo, "seed2", {"report": {"methods": ["random"], "seeds": [0, 2]}})
    proc = subprocess.Popen(
        [*SWEEP, "--poll", "0.5", "--executor", "slurm", "--preset", name],
        cwd=repo, env=_env(cluster), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    job = _wait_for(lambda: _running(cluster), 120, "the job never ran")
    time.sleep(2)  # well inside `dvc exp run`
    subprocess.run(["scancel", job.split("_")[0]], env=cluster.env(), check=True)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 2, out + err
    line = next(line for line in out.splitlines() if "experiment random-sp0.9-seed2-" in line)
    assert f"SLURM job {job} CANCELLED" in line and "/logs/" in line, line
    assert line.rstrip().endswith("***") and "CANCELLED AT" in line  # the log's last line: SLURM's own
    assert err.strip().count("\n") == 0 and "1 of 2 experiments are missing" in err
    dry = sweep(repo, cluster, "--executor", "slurm", "--preset", name, "--dry-run").stdout.splitlines()
    reused = [line for line in dry if line.startswith("reuse ")]
    queued = [line for line in dry if line.startswith("queue ")]
    assert len(reused) == 1 and "random-sp0.9-seed0-" in reused[0], dry
    assert len(queued) == 1 and " -n random-sp0.9-seed2-" in queued[0], dry


def test_ctrl_c_cancels_exactly_our_jobs(repo, cluster):
    other = subprocess.run(
        ["sbatch", "--parsable", "--output=/dev/null", "--wrap=sleep 60"],
        env=cluster.env(),
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()  # somebody else's job: must survive
    name = preset(repo, "seed3", {"report": {"methods": ["random"], "seeds": [3]}})
    log = repo / "ctrl-c.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [*SWEEP, "--poll", "0.5", "--executor", "slurm", "--preset", name],
            cwd=repo, env=_env(cluster), stdout=out, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        _wait_for(lambda: "submitted SLURM job" in log.read_text(), 60, "nothing was submitted")
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 130
    text = log.read_text()
    ours = text.split("submitted SLURM job ")[1].split(":")[0]
    assert f"cancelled SLURM job(s) {ours}" in text
    _wait_for(lambda: not [j for j in _active(cluster) if j.startswith(f"{ours}_") or j == ours], 30, "left")
    assert other in _active(cluster)
    subprocess.run(["scancel", other], env=cluster.env(), check=True)


def test_a_bad_partition_is_one_line_and_submits_nothing(repo, cluster):
    name = preset(repo, "bad-partition", {"report": {"seeds": [4], "slurm": {"partition": "nope"}}})
    before = {line.split("|")[0] for line in cluster.squeue()}
    got = sweep(repo, cluster, "--executor", "slurm", "--preset", name)
    assert got.returncode == 2
    assert got.stderr.strip().count("\n") == 0 and "partition" in got.stderr and "nope" in got.stderr, (
        got.stderr
    )
    assert {line.split("|")[0] for line in cluster.squeue()} <= before  # no job was submitted


def test_no_sbatch_is_one_line_and_submits_nothing(repo, tmp_path):
    # no cluster needed: PATH holds git and this environment, not SLURM
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "git").symlink_to(
        subprocess.run(["which", "git"], capture_output=True, text=True).stdout.strip()
    )
    name = preset(repo, "seed5", {"report": {"seeds": [5]}})
    path = f"{Path(sys.executable).parent}{os.pathsep}{bin_dir}"
    got = subprocess.run(
        [*SWEEP, "--executor", "slurm", "--preset", name],
        cwd=repo, env={**env(), "PATH": path}, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert got.returncode == 2
    assert got.stderr.strip() == (
        "error: executor slurm: `sbatch` is not on PATH; run the sweep on a SLURM login node, "
        "or without --executor slurm"
    )


def _cell(log: Path) -> str:
    """random-sp0.9-seed1-abc1234.log -> random1"""
    return log.name.split("-")[0] + log.name.split("-seed")[1].split("-")[0]


def _running(cluster: Cluster) -> str | None:
    return next((j.split("|")[0] for j in cluster.squeue() if j.endswith("|RUNNING")), None)


def _active(cluster: Cluster) -> list[str]:
    """Job ids squeue lists as pending or running (its default view)."""
    cmd = ["squeue", "-h", "-r", "-o", "%i"]
    return subprocess.run(cmd, env=cluster.env(), capture_output=True, text=True, check=True).stdout.split()


def _wait_for(probe, seconds: float, message: str):
    deadline = time.monotonic() + seconds
    while not (value := probe()):
        assert time.monotonic() < deadline, message
        time.sleep(0.3)
    return value
