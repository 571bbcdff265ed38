"""Finished experiments archived in git: a later sitting, without the experiment refs, still finds them."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

from sweep import __main__ as cli
from sweep import archive, dvc, plan
from sweep.executor import Failure
from sweep.table import LABELS
from tests.conftest import ROOT
from tests.sweep.fakes import exp_show, metrics_for
from tost.errors import TostError

MACHINE = {"cpu": "Intel(R) Xeon(R) Processor", "cpu_capability": "AVX512", "threads": 1,
           "torch": "2.14.1", "device": "cpu", "precision": "bf16", "compiled": False}  # fmt: skip


def test_a_record_keeps_params_headline_metrics_and_each_variants_machine(tmp_path):
    exp = dvc.Experiment("e1", "abc123", {"seed": 3}, {**metrics_for(["baseline", "tost"], 80.0)})
    detail = {"metrics/detail/train/tost.json": json.dumps({"machine": MACHINE, "epochs": [1, 2, 3]})}
    path = archive.save(exp, detail.get, tmp_path)
    (back,) = archive.load(tmp_path)
    assert back.experiment == exp and path.name == "e1.json"
    assert json.loads(back.read("metrics/detail/train/tost.json")) == {"machine": MACHINE}  # curves dropped
    assert back.read("metrics/detail/train/baseline.json") is None  # it had no record: none invented
    (tmp_path / "junk.json").write_text("{not json")
    assert [a.experiment.name for a in archive.load(tmp_path)] == ["e1"]


@pytest.fixture
def quick_cells(tmp_path, monkeypatch):
    """A directory with the repository's params and presets; the quick table's cells."""
    (tmp_path / "presets").mkdir()
    for f in (ROOT / "presets").glob("*.yaml"):
        (tmp_path / "presets" / f.name).write_text(f.read_text())
    (tmp_path / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    monkeypatch.chdir(tmp_path)
    return plan.plan(plan.apply_presets(yaml.safe_load((ROOT / "params.yaml").read_text()), ["quick"]))


def test_a_table_is_rebuilt_from_the_archive_when_the_experiments_are_gone(quick_cells, monkeypatch):
    variants = list(quick_cells[0].params["tricks"]["run"])
    shown = exp_show(
        [{"name": c.name, "params": c.params, "metrics": metrics_for(variants, 70.0 + i)}
         for i, c in enumerate(quick_cells)]
    )  # fmt: skip
    monkeypatch.setattr(dvc, "run_dvc", lambda args, env=None: shown)
    monkeypatch.setattr(dvc, "file_at", lambda rev: lambda path: json.dumps({"machine": MACHINE}))
    cli.main(["--quick", "--no-run"])
    first = Path("metrics/table-quick.csv").read_text()
    assert sorted(p.stem for p in archive.ARCHIVE.glob("*.json")) == sorted(c.name for c in quick_cells)

    # the next sitting: a fresh clone, no experiment refs, no commit files of theirs
    monkeypatch.setattr(dvc, "run_dvc", lambda args, env=None: "[]")
    monkeypatch.setattr(dvc, "file_at", lambda rev: lambda path: None)
    with pytest.raises(TostError, match="no finished experiment answers any cell"):
        cli.main(["--quick", "--no-run"])  # the archive holds other commits' work: only on request
    cli.main(["--quick", "--no-run", "--all-commits"])
    again = Path("metrics/table-quick.csv").read_text()
    assert again == first and "Intel(R) Xeon(R) Processor (AVX512)" in again


DVC_LOG = """Running stage 'mask':
> python -m stages.mask --data artifacts/data
prune round 1/1: sparsity 0.9900
error: random at sparsity 0.99 leaves no path from input to output: layer conv1.weight has no weight and nothing bypasses it; lower prune.sparsity or use prune.scope=layerwise
ERROR: failed to reproduce 'mask': failed to run: python -m stages.mask --data artifacts/data, exited with 2
"""  # noqa: E501  (the shape of `dvc queue logs` for a cell whose mask cuts the network)


def test_a_failed_experiment_is_explained_by_tosts_error_line_not_dvcs_last():
    assert dvc.why(DVC_LOG).startswith("error: random at sparsity 0.99 leaves no path")
    assert dvc.why("a\nb\n") == "b"


class CutExecutor:
    """Runs nothing; the first order's mask cuts the network, the second fails for another reason."""

    def __init__(self):
        self.orders = []

    def run(self, orders):
        self.orders += [o.name for o in orders]
        return [
            Failure(orders[0].name, "DVC queue task", "Failed", "log", dvc.why(DVC_LOG)),
            Failure(orders[1].name, "DVC queue task", "Failed", "log", "error: out of disk"),
        ]


def test_a_cell_whose_mask_cuts_the_network_is_a_recorded_result(quick_cells, monkeypatch, capsys):
    """Its seed is marked in the table, left out of the means, and never queued again."""
    variants = list(quick_cells[0].params["tricks"]["run"])
    cut, failed, *done = quick_cells
    shown = exp_show(
        [{"name": c.name, "params": c.params, "metrics": metrics_for(variants, 70.0)} for c in done]
    )
    monkeypatch.setattr(dvc, "run_dvc", lambda args, env=None: shown)
    fake = CutExecutor()
    monkeypatch.setattr(cli, "executor", lambda *a: fake)
    with pytest.raises(
        TostError, match=f"1 of {len(quick_cells)} experiments are missing .first: {failed.name}"
    ):
        cli.main(["--quick"])
    assert fake.orders == [cut.name, failed.name]
    (kept,) = [a for a in archive.load() if a.cut]
    assert kept.experiment.name == cut.name and "leaves no path" in kept.cut
    table = Path("metrics/table-quick.md").read_text()
    row = next(line for line in table.splitlines() if line.startswith(f"| {LABELS[cut.method]}"))
    assert f"✂ seed {cut.seed}" in row and "✂ seed k: the mask of seed k leaves no path" in table
    df = pd.read_csv("metrics/table-quick.csv", dtype={"seeds": str, "cut_seeds": str})
    base = df[(df.method == cut.method) & (df.sparsity == cut.sparsity) & (df.variant == "baseline")].iloc[0]
    assert str(cut.seed) not in str(base.seeds).split() and str(base.cut_seeds) == str(cut.seed)

    fake.orders.clear()  # the next sitting: the cut cell is not trained again, the failed one is
    cli.main(["--quick", "--all-commits", "--dry-run"])
    out = capsys.readouterr().out
    assert f"cut    {cut.name}  (recorded: error: random at sparsity 0.99 leaves no path" in out
    assert f"queue  dvc exp run --queue -n {failed.name} " in out
