"""A stage process starts fast: it imports what it runs, not torchvision's datasets, matplotlib or DVC."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import ROOT

HEAVY = ("torchvision.datasets", "matplotlib", "dvc", "pandas", "sklearn", "sweep.table")
PROBE = """
import runpy, sys
sys.argv = ["{module}", "--help"]
try:
    runpy.run_module("{module}", run_name="__main__")
except SystemExit:
    pass
print(sorted({{m.split(".")[0] if not m.startswith(("torchvision.", "sweep.")) else ".".join(m.split(".")[:2])
              for m in sys.modules}}))
"""


@pytest.mark.parametrize("stage", ["check", "data", "dense", "mask", "train", "analyze"])
def test_stage_help_imports_nothing_heavy(stage):
    out = subprocess.run(
        [sys.executable, "-c", PROBE.format(module=f"stages.{stage}")],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=True,
    ).stdout  # fmt: skip
    loaded = set(eval(out.strip().splitlines()[-1]))
    assert "torch" in loaded and "tost" in loaded  # the probe saw the stage's imports
    assert not loaded & set(HEAVY), f"stages.{stage} --help imported {sorted(loaded & set(HEAVY))}"


def test_stage_files_stay_thin():
    """A stage reads params, calls the library and writes its outs: 60 lines at most (the README's aim)."""
    long = {p.name: n for p in (ROOT / "stages").glob("*.py") if (n := len(p.read_text().splitlines())) > 60}
    assert not long, long
