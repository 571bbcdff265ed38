"""`python -m sweep` as a user runs it: dry runs, presets, and one clear error for each mistake."""

from __future__ import annotations

import pytest
import yaml

from sweep import __main__ as cli
from sweep import dvc
from tests.conftest import ROOT
from tests.sweep.fakes import FakeDvc
from tost import config
from tost.errors import ConfigError, TostError


@pytest.fixture
def fake_dvc() -> FakeDvc:
    """Every `dvc` call but `exp show` (which answers: no experiments), recorded."""
    return FakeDvc([{}])


@pytest.fixture
def stage_dir(tmp_path, monkeypatch, fake_dvc):
    """A directory with the repository's params.yaml and presets, and a DVC that has no experiments."""
    (tmp_path / "presets").mkdir()
    for f in (ROOT / "presets").glob("*.yaml"):
        (tmp_path / "presets" / f.name).write_text(f.read_text())
    (tmp_path / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(
        dvc, "run_dvc", lambda args, env=None: "[]" if args[:2] == ["exp", "show"] else fake_dvc(args)
    )
    return tmp_path


def test_dry_run_prints_the_plan_and_runs_nothing(stage_dir, fake_dvc, capsys):
    cli.main(["--dry-run", "--quick"])
    out = capsys.readouterr().out.splitlines()
    quick = yaml.safe_load((ROOT / "presets" / "quick.yaml").read_text())["report"]
    n = len(config.load(ROOT / "params.yaml").report.methods) * len(quick["seeds"]) * len(quick["sparsities"])
    assert len(out) == n and all(line.startswith("queue  dvc exp run --queue -n ") for line in out)
    assert not list(stage_dir.glob("metrics/*"))
    assert fake_dvc.calls == []  # nothing queued, started or removed: only `exp show` was read


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--preset", "nosuch"], "presets/nosuch.yaml: not found"),
        (["--preset", "typo.yaml"], "typo.yaml: train.epoch: no such key"),
        (["--preset", "norun.yaml"], "tricks.run: the table compares every variant with baseline"),
        (["--preset", "badrate.yaml"], "report.lt_rate must be in"),
    ],
)
def test_bad_presets_are_one_clear_error(stage_dir, args, message):
    (stage_dir / "typo.yaml").write_text("train:\n  epoch: 3\n")
    (stage_dir / "norun.yaml").write_text("tricks:\n  run: [tost]\n")
    (stage_dir / "badrate.yaml").write_text("report:\n  lt_rate: 1.5\n")
    with pytest.raises(ConfigError, match=message):
        cli.main([*args, "--dry-run"])


def test_set_args_print_a_presets_overrides_for_dvc_exp_run(stage_dir, capsys):
    cli.main(["--preset", "fashion", "--set-args"])
    out = capsys.readouterr().out.strip()
    assert out.startswith("-S ") and 'data.name="fashion_mnist"' in out.replace("'", "")
    assert "report." not in out  # the table's own section never goes to an experiment


@pytest.mark.parametrize(
    ("preset", "message"),
    [
        ("report: {bogus: 1}", "report.bogus: no such key in params.yaml"),
        ("report: {seeds: []}", "report.seeds: list at least one"),
        ("report: {methods: []}", "report.methods: list at least one"),
        ("report: {seeds: [0, 0]}", "report.seeds: listed twice: [0, 0]"),
        ("report: {sparsities: [1.0]}", "report.sparsities must be in [0, 1), got [1.0]"),
        ("report: {sparsities: [0.9, 0.9]}", "report.sparsities: listed twice"),
    ],
)  # fmt: skip
def test_a_bad_preset_queues_nothing(stage_dir, monkeypatch, preset, message):
    """Without --dry-run: the preset is refused before DVC is asked for anything."""
    (stage_dir / "bad.yaml").write_text(preset + "\n")
    calls = []
    real = dvc.run_dvc
    monkeypatch.setattr(dvc, "run_dvc", lambda args, env=None: calls.append(args) or real(args, env))
    with pytest.raises(ConfigError) as err:
        cli.main(["--preset", "bad.yaml"])
    assert message in str(err.value) and "\n" not in str(err.value)
    assert calls == []


def test_jobs_zero_is_refused_not_replaced_by_report_jobs(stage_dir, fake_dvc):
    with pytest.raises(ConfigError, match=r"^--jobs must be >= 1, got 0$"):
        cli.main(["--quick", "--jobs", "0"])
    assert fake_dvc.calls == []


def test_no_run_with_nothing_finished_is_one_error_and_queues_nothing(stage_dir, fake_dvc):
    with pytest.raises(TostError, match="no finished experiment answers any cell of the table; run without"):
        cli.main(["--quick", "--no-run"])
    assert fake_dvc.calls == []  # nothing queued or started


def test_a_workspace_that_differs_from_head_is_named_before_anything_runs(stage_dir, capsys):
    """After an own-mask experiment the workspace keeps `prune.method: file`: the sweep says so."""
    import subprocess

    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "params.yaml"], check=True)
    subprocess.run([*git, "commit", "-qm", "params"], check=True)
    cli.main(["--dry-run", "--quick"])
    assert "differs from HEAD" not in capsys.readouterr().err
    raw = yaml.safe_load((stage_dir / "params.yaml").read_text())
    raw["prune"].update(method="file", path="my-mask.pt")
    (stage_dir / "params.yaml").write_text(yaml.safe_dump(raw))
    cli.main(["--set-args", "--quick"])
    err = capsys.readouterr().err
    assert err.startswith("warning: params.yaml differs from HEAD in prune.method, prune.path; ")
    assert err.count("\n") == 1 and "git checkout params.yaml" in err
