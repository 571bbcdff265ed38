"""The benchmark scripts still run against the library (at toy sizes; their numbers are not checked)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import ROOT

SCRIPTS = {
    "bench_train": ["--arch", "resnet20", "--width", "4", "--images", "256", "--epochs", "1",
                    "--batch-sizes", "64", "--workers", "0", "--device", "cpu", "--project"],
    "bench_mask": ["--width", "4", "--batches", "1", "--batch-size", "32", "--images", "64",
                   "--step-batch-size", "32", "--synflow-iters", "2", "--device", "cpu"],
    "synflow_counting": ["--width", "4", "--iters", "3", "--sparsities", "0.9", "--seeds", "0"],
    "bench_share": ["--images", "128", "--epochs", "1", "--shares", "1", "--width", "4", "--device", "cpu"],
}  # fmt: skip


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_benchmark_runs(script):
    proc = subprocess.run(
        [sys.executable, "-m", f"benchmarks.{script}", *SCRIPTS[script]],
        cwd=ROOT, capture_output=True, text=True, timeout=300, env={"OMP_NUM_THREADS": "1", "PATH": ""},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "|---" in proc.stdout  # it printed its markdown table
