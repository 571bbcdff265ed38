"""The benchmark scripts still run against the library, at toy sizes: each prints a table of measured rows
(their values are not compared: speed is measured in benchmarks/, never asserted by timing)."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from tests.conftest import ROOT

SCRIPTS = {
    "bench_train": ["--arch", "resnet20", "--width", "4", "--images", "256", "--epochs", "1",
                    "--batch-sizes", "64", "--workers", "0", "--device", "cpu", "--project"],
    "bench_mask": ["--width", "4", "--batches", "1", "--batch-size", "32", "--images", "64",
                   "--step-batch-size", "32", "--synflow-iters", "2", "--device", "cpu"],
    "synflow_counting": ["--width", "4", "--iters", "3", "--sparsities", "0.9", "--seeds", "0"],
    "bench_share": ["--images", "128", "--epochs", "1", "--shares", "1", "--width", "4", "--device", "cpu"],
    "step_ops": ["--models", "resnet20"],
    "cpu_paths": ["--images", "256", "--epochs", "1", "--rounds", "1", "--no-compile", "--width", "4"],
}  # fmt: skip


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_benchmark_runs(script):
    proc = subprocess.run(
        [sys.executable, "-m", f"benchmarks.{script}", *SCRIPTS[script]],
        cwd=ROOT, capture_output=True, text=True, timeout=300, env={"OMP_NUM_THREADS": "1", "PATH": ""},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = [*proc.stdout.splitlines(), ""]
    headers = {i - 1 for i, line in enumerate(lines) if line.startswith("|---")}  # its markdown tables
    rows = [
        ln
        for i, ln in enumerate(lines)
        if ln.startswith("|") and not ln.startswith("|---") and i not in headers
    ]
    assert headers and rows, proc.stdout
    for row in rows:  # each row measured something: a positive number in one of its cells
        assert any(_positive(cell) for cell in row.strip("|").split("|")), row


def _positive(cell: str) -> bool:
    try:
        return float(cell.strip().split()[0].rstrip("%x×").replace(",", "")) > 0
    except (ValueError, IndexError):
        return False


def test_the_gpu_evidence_takes_the_most_epochs_that_fit_the_budget():
    from benchmarks import gpu_evidence as ev

    # 8 experiments, 4 at a time: 2 rounds of (6 trainings x epochs x 2 s x slowdown 2 + 70 s)
    assert ev.table_seconds(5, 2.0, 4, 2.0, 70.0) == 2 * (6 * 5 * 2.0 * 2.0 + 70.0)
    budget = ev.table_seconds(7, 2.0, 4, 2.0, 70.0)
    assert ev.fitting_epochs(budget, 2.0, 4, 2.0, 70.0) == 7
    assert ev.fitting_epochs(budget - 1, 2.0, 4, 2.0, 70.0) == 6
    assert ev.fitting_epochs(100.0, 2.0, 4, 2.0, 70.0) == 0  # the overhead alone is over budget


def test_the_gpu_evidence_sizes_and_writes_its_preset_on_the_cpu(tmp_path):
    out = tmp_path / "epochs.yaml"
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.gpu_evidence", "--budget", "100000", "--preset-out", str(out),
         "--images", "128", "--evaluated", "64", "--device", "cpu"],
        cwd=ROOT, capture_output=True, text=True, timeout=300, env={"OMP_NUM_THREADS": "1", "PATH": ""},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "estimate: 200 epochs" in proc.stdout  # the cap: 100,000 s fits any tiny epoch count
    assert yaml.safe_load(out.read_text()) == {"train": {"epochs": 200}}
