"""`make help` lists every target of the Makefile, one line each, from the Makefile's own comments."""

from __future__ import annotations

import re
import subprocess

from tests.conftest import ROOT


def test_make_help_lists_every_target_once_in_one_line():
    text = (ROOT / "Makefile").read_text()
    targets = {m for m in re.findall(r"^([a-z][a-z-]*):", text, flags=re.M)}
    out = subprocess.run(["make", "-s", "help"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    listed = [line.split()[1] for line in out.splitlines()]
    assert sorted(listed) == sorted(targets) and len(listed) == len(set(listed)), out
    assert all(len(line.split(maxsplit=2)) == 3 and not line.endswith(";") for line in out.splitlines()), out


def test_what_dvc_plots_show_writes_is_not_offered_to_git():
    """`dvc plots show` writes dvc_plots/ in the repository root: a rendering, not a source."""
    proc = subprocess.run(["git", "check-ignore", "-q", "dvc_plots/index.html"], cwd=ROOT)
    assert proc.returncode == 0
