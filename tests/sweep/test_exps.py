"""`make exps`: the readable `dvc exp show`, built from DVC's JSON without running DVC."""

from __future__ import annotations

import copy

import pytest

from sweep import dvc, exps
from tests.sweep.fakes import exp_show, metrics_for

VARIANTS = ["baseline", "soft_act", "ghost_skip", "label_smooth", "lrsi", "tost"]


def _rows(raw_params, changes: list[dict]) -> list[dvc.Experiment]:
    entries = []
    for i, change in enumerate(changes):
        params = copy.deepcopy(raw_params)
        for dotted, value in change.items():
            node = params
            *path, last = dotted.split(".")
            for key in path:
                node = node.setdefault(key, {})
            node[last] = value
        entries.append({"name": f"exp-{i}", "params": params, "metrics": metrics_for(VARIANTS, 90.0 + i)})
    return dvc.parse_exp_show(exp_show(entries), baselines=True)


def test_rows_are_the_workspace_the_commit_and_its_experiments(raw_params):
    rows = _rows(raw_params, [{}, {"prune.method": "snip"}])
    assert [r.name for r in rows] == ["workspace", "main", "exp-0", "exp-1"]
    assert [line[:2] for line in exps.table(rows)[1:3]] == [["workspace", ""], ["main", "abc"]]
    unnamed = dvc.Experiment("0123456789abcdef", "0123456789abcdef", rows[1].params, rows[1].metrics)
    assert exps.table([unnamed])[1][:2] == ["0123456", "0123456"]  # a commit without a branch


def test_only_the_params_that_differ_and_every_variant_side_by_side(raw_params):
    rows = _rows(raw_params, [{"prune.sparsity": 0.95}, {"prune.method": "snip", "prune.sparsity": 0.95}])[2:]
    lines = exps.table(rows)
    assert lines[0] == ["experiment", "rev", *VARIANTS, "prune.method"]  # sparsity is the same in both
    assert lines[1] == ["exp-0", "exp-0sh", "90.00", "91.00", "92.00", "93.00", "94.00", "95.00", "random"]
    assert lines[2][-1] == "snip" and lines[2][2] == "91.00"


def test_a_missing_metric_is_a_dash_and_an_unlisted_variant_comes_last(raw_params):
    rows = _rows(raw_params, [{"tricks.run": ["tost", "baseline"]}])[2:]
    extra = {**rows[0].metrics, "metrics/train/mine.json": {"test_acc": 50.0}}
    rows = [dvc.Experiment(rows[0].name, rows[0].rev, rows[0].params, extra)]
    header = exps.table(rows)[0]
    assert header[2:4] == ["tost", "baseline"]  # tricks.run's order, then the others by name
    assert header[4:] == ["ghost_skip", "label_smooth", "lrsi", "mine", "soft_act"]
    assert exps.variants(rows)[:2] == ["tost", "baseline"]
    rows[0].metrics["metrics/train/tost.json"]["test_acc"] = float("nan")
    assert exps.table(rows)[1][2] == "-"


def test_many_changed_params_share_the_last_column_and_lines_fit_the_width(raw_params):
    change = {f"tricks.lrsi.k{i}": i for i in range(30)}
    rows = _rows(raw_params, [change, {}])[2:]
    lines = exps.table(rows)
    assert len(lines[0]) == exps.MAX_COLUMNS and lines[0][-1] == "other params"
    assert lines[1][-1].startswith("tricks.lrsi.k") and "=" in lines[1][-1]
    text = exps.render(lines, width=160)
    assert max(len(line) for line in text.splitlines()) <= 160
    assert text.splitlines()[1].endswith("…")  # cut, not wrapped


@pytest.mark.parametrize(
    ("value", "text"), [(0.95, "0.95"), ([1, 2], "[1,2]"), ("snip", "snip"), (True, "true"), ("", '""')]
)
def test_param_values_are_compact(value, text):
    assert exps.flatten({"a": {"b": value}}) == {"a.b": text}
