"""Planning a sweep: params algebra, presets, cells, identities, and matching finished experiments."""

from __future__ import annotations

import pytest
import yaml

from sweep import dvc, plan
from tests.conftest import ROOT
from tests.sweep.fakes import exp_show, metrics_for
from tost import config
from tost.errors import ConfigError
from tost.resume import run_identity


def identity(raw: dict) -> str:
    return run_identity(config.parse(raw), plan.TRAINING)


def test_override_refuses_unknown_keys_and_copies(raw_params):
    out = plan.override(raw_params, {"train.epochs": 3}, "preset x")
    assert out["train"]["epochs"] == 3 and raw_params["train"]["epochs"] != 3
    for bad in ("train.epoch", "nope.x", "train", "train.epochs.x"):
        with pytest.raises(ConfigError, match=f"preset x: {bad}: no such key"):
            plan.override(raw_params, {bad: 1}, "preset x")


def test_set_args_are_the_diff_as_json_literals(raw_params):
    target = plan.override(
        raw_params,
        {"seed": 3, "data.name": "cifar10", "train.milestones": [90, 135], "report.jobs": 7, "train.lr": 0.1},
        "t",
    )
    args = plan.set_args(raw_params, target)
    pairs = [args[i + 1] for i in range(0, len(args), 2)]
    assert set(args[::2]) == {"-S"}
    assert pairs == [
        "seed=3",
        'data.name="cifar10"',
        "train.milestones=[90,135]",
    ]  # lr unchanged, report left out


def test_identity_ignores_report_and_spellings(raw_params):
    same = plan.override(
        raw_params, {"report.jobs": 9, "prune.method": "rp", "train.weight_decay": "5e-4"}, "t"
    )
    assert identity(same) == identity(raw_params)
    other = plan.override(raw_params, {"train.epochs": 2}, "t")
    assert identity(other) != identity(raw_params)


def test_lt_rounds_follow_the_pruning_rate():
    assert [plan.lt_rounds(s, 0.2) for s in (0.2, 0.59, 0.79, 0.89, 0.95)] == [1, 4, 7, 10, 13]
    assert plan.lt_rounds(0.9, 0.5) == 3
    assert plan.lt_rounds(0.0, 0.5) == 1


def test_plan_covers_the_grid_with_stable_unique_names(raw_params):
    raw = plan.override(raw_params, {"report.sparsities": [0.8, 0.9], "report.seeds": [0, 1, 2]}, "t")
    cells = plan.plan(raw)
    methods = config.parse(raw).report.methods
    assert len(cells) == len(methods) * 2 * 3
    assert len({c.name for c in cells}) == len(cells)
    assert [c.name for c in plan.plan(raw)] == [c.name for c in cells]
    lt = next(c for c in cells if c.method == "lt" and c.sparsity == 0.9)
    assert lt.params["prune"]["rounds"] == 3  # lt_rate 0.5
    rp = next(c for c in cells if c.method == "random" and c.seed == 2)
    assert rp.params["seed"] == 2 and rp.params["prune"]["rounds"] == raw_params["prune"]["rounds"]


def test_exp_show_parsing_skips_running_and_matches_by_params(raw_params):
    variants = list(raw_params["tricks"]["run"])
    cells = plan.plan(raw_params)
    rp0 = next(c for c in cells if c.method == "random" and c.seed == 0)
    by_hand = plan.override(rp0.params, {"report.seeds": [5]}, "t")  # report differs: still the same run
    text = exp_show(
        [
            {"name": "my-run", "params": by_hand, "metrics": metrics_for(variants, 90.0)},
            {
                "name": "live",
                "params": next(c for c in cells if c.method == "snip").params,
                "metrics": metrics_for(variants, 50.0),
                "executor": {"state": "running"},
            },
            {"name": "partial", "params": cells[1].params, "metrics": metrics_for(variants[:1], 70.0)},
            {"name": "old-layout", "params": {"seed": 0}, "metrics": metrics_for(variants, 1.0)},
        ]
    )
    exps = dvc.parse_exp_show(text)
    assert [e.name for e in exps] == ["my-run", "partial", "old-layout"]
    found = plan.match(cells, exps, variants, "test_acc")
    assert list(found) == [rp0.name]
    exp, run = found[rp0.name]
    assert exp.name == "my-run" and run.accuracy["baseline"] == 90.0 and run.seed == 0


def test_paper_preset_is_the_original_setting(raw_params):
    paper = yaml.safe_load((ROOT / "presets" / "paper.yaml").read_text())
    params = config.parse(plan.override(raw_params, plan.flatten(paper), "paper"))
    assert (params.data.name, params.model.arch, params.model.width) == ("cifar10", "resnet18", 64)
    assert (params.data.crop_padding, params.data.flip) == (4, True)
    t = params.train
    assert (t.epochs, t.batch_size, t.lr, t.weight_decay, t.schedule) == (182, 128, 0.1, 2e-4, "multistep")
    assert (t.milestones, t.gamma, t.momentum) == ((90, 135), 0.1, 0.9)
    assert params.tricks.options["lrsi"].iters == 180
    assert params.report.lt_rate == 0.2
    quick = yaml.safe_load((ROOT / "presets" / "quick.yaml").read_text())
    both = config.parse(
        plan.override(plan.override(raw_params, plan.flatten(paper), "p"), plan.flatten(quick), "q")
    )
    assert both.data.name == "digits" and both.train.epochs < 20


@pytest.mark.parametrize("empty", [2, ["a.weight", "b.weight"]], ids=["headline-count", "older-name-list"])
def test_a_run_carries_the_number_of_empty_layers_of_its_mask(raw_params, empty):
    variants = list(raw_params["tricks"]["run"])
    cell = plan.plan(raw_params)[0]
    metrics = {**metrics_for(variants, 80.0), "metrics/mask.json": {"empty_layers": empty}}
    (exp,) = dvc.parse_exp_show(exp_show([{"name": "e", "params": cell.params, "metrics": metrics}]))
    run = plan.as_run(exp, config.parse(exp.params), variants, "test_acc")
    assert run.empty_layers == 2


@pytest.mark.parametrize("path", sorted((ROOT / "presets").glob("*.yaml")), ids=lambda p: p.stem)
def test_every_preset_parses_and_is_documented(raw_params, path):
    """A preset is only found by reading docs/table.md, and a bad key would fail mid-sweep."""
    preset = yaml.safe_load(path.read_text())
    config.parse(plan.override(raw_params, plan.flatten(preset), path.stem))
    assert f"| `{path.stem}` |" in (ROOT / "docs" / "table.md").read_text()


def test_report_metric_best_val_acc_tabulates_validation_accuracy(raw_params):
    variants = list(raw_params["tricks"]["run"])
    cell = plan.plan(raw_params)[0]
    metrics = {
        f"metrics/train/{v}.json": {"test_acc": 90.0 + i, "best_val_acc": 50.0 + i, "final_test_acc": 1.0}
        for i, v in enumerate(variants)
    }
    (exp,) = dvc.parse_exp_show(exp_show([{"name": "e", "params": cell.params, "metrics": metrics}]))
    run = plan.as_run(exp, config.parse(exp.params), variants, "best_val_acc")
    assert run.accuracy == {v: 50.0 + i for i, v in enumerate(variants)}
    assert plan.as_run(exp, config.parse(exp.params), variants, "test_acc").accuracy[variants[0]] == 90.0
