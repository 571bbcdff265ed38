"""`python -m sweep.reproduce` (the last line of `make repro`): exactly, or by how much and where."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from sweep import reproduce

MACHINE_A = {"cpu": "AMD EPYC 7B13", "cpu_capability": "AVX2", "threads": 1, "torch": "2.14.1",
             "device": "cpu", "precision": "fp32", "compiled": False}  # fmt: skip
MACHINE_B = {**MACHINE_A, "cpu": "Intel(R) Xeon(R) Processor", "cpu_capability": "AVX512"}


def _metrics(base: float = 98.05) -> reproduce.Metrics:
    return {
        "metrics/dense.json": {"test_acc": 98.89, "train_seconds": 11.3, "images_per_s": 3419.0},
        "metrics/train/baseline.json": {"test_acc": base, "final_test_acc": 97.5, "images_per_s": 3000.0},
        "metrics/train/tost.json": {"test_acc": 97.21, "final_test_acc": 98.61, "sparsity": 0.9},
        "metrics/mask.json": {"method": "random", "sparsity": 0.9},
    }


def test_identical_metrics_say_reproduced_and_timings_do_not_count():
    faster = _metrics()
    faster["metrics/dense.json"]["train_seconds"] = 5.0
    line = reproduce.verdict(_metrics(), faster, [MACHINE_A], [MACHINE_B], ("HEAD", "workspace"))
    assert line == "reproduced exactly: all 8 metric values of workspace equal HEAD's"


def test_one_changed_value_is_named_with_its_difference_and_both_machines():
    line = reproduce.verdict(_metrics(), _metrics(96.94), [MACHINE_A], [MACHINE_B], ("HEAD", "workspace"))
    assert line.startswith("different: 1 of 8 metric values of workspace differ from HEAD's; ")
    assert (
        "largest test-accuracy difference 1.11 points (train/baseline.json:test_acc: 98.05 -> 96.94)" in line
    )
    assert "over 5 test accuracies" in line  # test_acc and final_test_acc of dense, baseline, tost
    assert "HEAD made on AMD EPYC 7B13 (AVX2), 1 thread" in line
    assert "workspace on Intel(R) Xeon(R) Processor (AVX512), 1 thread" in line


def test_a_metric_only_one_side_has_is_named_when_no_accuracy_differs():
    added = {**_metrics(), "metrics/accuracy.json": {"acc": {"baseline": 98.05, "tost": 97.21}}}
    line = reproduce.verdict(_metrics(), added, [MACHINE_A], [MACHINE_A], ("HEAD", "workspace"))
    assert line.startswith("different: 2 of 10 metric values of workspace differ from HEAD's; ")
    assert (
        "no test accuracy differs (5 in common); first differing: accuracy.json:acc.baseline: None -> 98.05"
        in line
    )


def test_records_without_a_machine_are_said_to_be_unrecorded():
    line = reproduce.verdict(_metrics(), _metrics(97.0), [], [MACHINE_B], ("v1", "v2"))
    assert "v1 made on a machine it does not record, v2 on Intel(R) Xeon(R) Processor" in line


def _git(repo: Path, *args: str) -> str:
    env = {
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@t",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@t",
    }
    return subprocess.run(
        ["git", *args], cwd=repo, env=env, check=True, capture_output=True, text=True
    ).stdout


def _write(repo: Path, metrics: reproduce.Metrics, machine: dict) -> None:
    for path, values in metrics.items():
        (repo / path).parent.mkdir(parents=True, exist_ok=True)
        (repo / path).write_text(json.dumps(values))
    detail = repo / "metrics/detail/train/baseline.json"
    detail.parent.mkdir(parents=True, exist_ok=True)
    detail.write_text(json.dumps({"test_acc": 0, "machine": machine}))


def test_the_command_compares_a_revision_with_the_workspace_and_two_revisions(tmp_path, monkeypatch, capsys):
    _git(tmp_path, "init", "-q")
    _write(tmp_path, _metrics(), MACHINE_A)
    _git(tmp_path, "add", "-A")
    _git(tmp_path, "commit", "-qm", "committed")
    monkeypatch.chdir(tmp_path)
    reproduce.main([])
    assert capsys.readouterr().out.startswith("reproduced exactly: all 8 metric values of workspace")
    _write(tmp_path, _metrics(96.94), MACHINE_B)
    reproduce.main([])
    out = capsys.readouterr().out
    assert "1.11 points" in out and "AMD EPYC 7B13" in out and "Intel(R) Xeon(R) Processor" in out
    _git(tmp_path, "commit", "-qam", "rerun elsewhere")
    reproduce.main(["HEAD~1", "HEAD"])
    assert "HEAD~1 made on AMD EPYC 7B13" in capsys.readouterr().out
    with pytest.raises(Exception, match="nope"):
        reproduce.main(["nope"])
