"""The paper-style table: aggregation and noise rule, plots, and the sweep logic around DVC.

DVC itself is replaced by a recording fake here; tests/test_pipeline.py runs the real thing.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml

from stages import table as table_stage
from tost import config, sweep
from tost.errors import ConfigError
from tost.table import Run, aggregate, gain_heatmap, sparsity_plot, to_markdown

ROOT = Path(__file__).resolve().parents[1]
PNG = b"\x89PNG\r\n\x1a\n"


def runs_two_seeds() -> list[Run]:
    return [
        Run("r0", "random", 0.9, 0, {"baseline": 90.0, "tost": 95.0, "soft_act": 90.5}),
        Run("r1", "random", 0.9, 1, {"baseline": 92.0, "tost": 96.0, "soft_act": 91.0}),
        Run("s0", "snip", 0.9, 0, {"baseline": 80.0, "tost": 81.0}),
    ]


def row(df, method, variant):
    (found,) = df[(df.method == method) & (df.variant == variant)].to_dict("records")
    return found


def test_aggregate_means_stds_and_paired_gains():
    df = aggregate(runs_two_seeds(), ["baseline", "soft_act", "tost"])
    base = row(df, "random", "baseline")
    assert base["mean"] == pytest.approx(91.0)
    assert base["std"] == pytest.approx(math.sqrt(2.0))
    assert base["n_seeds"] == 2
    assert base["experiments"] == "r0 r1"
    tost = row(df, "random", "tost")
    assert tost["gain"] == pytest.approx(4.5)  # paired: (5 + 4) / 2
    assert tost["gain_std"] == pytest.approx(math.sqrt(0.5))
    assert not tost["within_noise"]  # 4.5 >= 2 * 0.71
    soft = row(df, "random", "soft_act")
    assert soft["gain"] == pytest.approx(-0.25)  # (+0.5, -1.0)
    assert soft["within_noise"]  # 0.25 < 2 * 1.06
    one_seed = row(df, "snip", "tost")
    assert one_seed["n_seeds"] == 1 and math.isnan(one_seed["std"])
    assert one_seed["within_noise"]  # one seed: no spread, so never signal
    assert row(df, "snip", "soft_act")["n_seeds"] == 0  # the variant was not trained there


def test_aggregate_counts_a_repeated_seed_once():
    runs = [*runs_two_seeds(), Run("r0-again", "random", 0.9, 0, {"baseline": 10.0, "tost": 10.0})]
    df = aggregate(runs, ["baseline", "tost"])
    assert row(df, "random", "baseline")["n_seeds"] == 2
    assert "r0-again" not in row(df, "random", "baseline")["experiments"]


def test_markdown_rows_follow_the_paper_order_and_mark_noise():
    variants = ["baseline", "soft_act", "tost"]
    md = to_markdown(aggregate(runs_two_seeds(), variants), variants, ["snip", "random"], "t")
    lines = [line for line in md.splitlines() if line.startswith("| ")]
    assert lines[0] == "| method | baseline | soft_act | tost |"
    assert lines[1].startswith("| SNIP |") and lines[2].startswith("| RP |")
    assert "91.00 ± 1.41 (2)" in lines[2]
    assert "95.50 ± 0.71 (2) +4.50 |" in lines[2]  # signal: no marker
    assert "-0.25~" in lines[2]  # within noise
    assert "| — |" in lines[1]  # snip has no soft_act run


def test_plots_are_written(tmp_path):
    runs = [
        *runs_two_seeds(),
        Run("r2", "random", 0.5, 0, {"baseline": 97.0, "tost": 97.5, "soft_act": 97.0}),
    ]
    df = aggregate(runs, ["baseline", "soft_act", "tost"])
    gain_heatmap(df, ["baseline", "soft_act", "tost"], ["random", "snip"], tmp_path / "gain.png")
    sparsity_plot(df, ["random", "snip"], tmp_path / "sparsity.png", ["baseline", "tost"])
    for name in ("gain.png", "sparsity.png"):
        assert (tmp_path / name).read_bytes()[:8] == PNG
    assert not list(tmp_path.glob(".*tmp"))


def test_override_refuses_unknown_keys_and_copies(raw_params):
    out = sweep.override(raw_params, {"train.epochs": 3}, "preset x")
    assert out["train"]["epochs"] == 3 and raw_params["train"]["epochs"] != 3
    for bad in ("train.epoch", "nope.x", "train", "train.epochs.x"):
        with pytest.raises(ConfigError, match=f"preset x: {bad}: no such key"):
            sweep.override(raw_params, {bad: 1}, "preset x")


def test_set_args_are_the_diff_as_json_literals(raw_params):
    target = sweep.override(
        raw_params,
        {"seed": 3, "data.name": "cifar10", "train.milestones": [90, 135], "report.jobs": 7, "train.lr": 0.1},
        "t",
    )
    args = sweep.set_args(raw_params, target)
    pairs = [args[i + 1] for i in range(0, len(args), 2)]
    assert set(args[::2]) == {"-S"}
    assert pairs == [
        "seed=3",
        'data.name="cifar10"',
        "train.milestones=[90, 135]",
    ]  # lr unchanged, report left out


def test_identity_ignores_report_and_spellings(raw_params):
    same = sweep.override(
        raw_params, {"report.jobs": 9, "prune.method": "rp", "train.weight_decay": "5e-4"}, "t"
    )
    assert sweep.training_identity(same) == sweep.training_identity(raw_params)
    other = sweep.override(raw_params, {"train.epochs": 2}, "t")
    assert sweep.training_identity(other) != sweep.training_identity(raw_params)


def test_lt_rounds_follow_the_pruning_rate():
    assert [sweep.lt_rounds(s, 0.2) for s in (0.2, 0.59, 0.79, 0.89, 0.95)] == [1, 4, 7, 10, 13]
    assert sweep.lt_rounds(0.9, 0.5) == 3
    assert sweep.lt_rounds(0.0, 0.5) == 1


def test_plan_covers_the_grid_with_stable_unique_names(raw_params):
    raw = sweep.override(raw_params, {"report.sparsities": [0.8, 0.9], "report.seeds": [0, 1, 2]}, "t")
    cells = sweep.plan(raw)
    methods = config.parse(raw).report.methods
    assert len(cells) == len(methods) * 2 * 3
    assert len({c.name for c in cells}) == len(cells)
    assert [c.name for c in sweep.plan(raw)] == [c.name for c in cells]
    lt = next(c for c in cells if c.method == "lt" and c.sparsity == 0.9)
    assert lt.params["prune"]["rounds"] == 3  # lt_rate 0.5
    rp = next(c for c in cells if c.method == "random" and c.seed == 2)
    assert rp.params["seed"] == 2 and rp.params["prune"]["rounds"] == raw_params["prune"]["rounds"]


def exp_show(entries: list[dict]) -> str:
    """`dvc exp show --json` in the shape DVC 3 prints: workspace, then the baseline commit with its exps."""

    def rev(name, params, metrics):
        return {
            "rev": name + "sha",
            "name": name,
            "error": None,
            "experiments": None,
            "data": {
                "rev": name + "sha",
                "params": {"params.yaml": {"data": params}},
                "metrics": {k: {"data": v} for k, v in metrics.items()},
            },
        }

    exps = [
        {
            "name": e["name"],
            "executor": e.get("executor"),
            "revs": [rev(e["name"], e["params"], e["metrics"])],
        }
        for e in entries
    ]
    return json.dumps(
        [
            {"rev": "workspace", "name": None, "error": None, "experiments": None, "data": {}},
            {"rev": "abc", "name": "main", "error": None, "experiments": exps, "data": {}},
        ]
    )


def metrics_for(variants, acc):
    return {
        f"metrics/train/{v}.json": {"test_acc": acc + i, "final_test_acc": 0.0}
        for i, v in enumerate(variants)
    }


def test_exp_show_parsing_skips_running_and_matches_by_params(raw_params):
    variants = list(raw_params["tricks"]["run"])
    cells = sweep.plan(raw_params)
    rp0 = next(c for c in cells if c.method == "random" and c.seed == 0)
    by_hand = sweep.override(rp0.params, {"report.seeds": [5]}, "t")  # report differs: still the same run
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
    exps = sweep.parse_exp_show(text)
    assert [e.name for e in exps] == ["my-run", "partial", "old-layout"]
    found = sweep.match(cells, exps, variants, "test_acc")
    assert list(found) == [rp0.name]
    exp, run = found[rp0.name]
    assert exp.name == "my-run" and run.accuracy["baseline"] == 90.0 and run.seed == 0


class FakeDvc:
    """Records `dvc` calls and answers `queue status` from a script of successive tables."""

    def __init__(self, statuses: list[dict[str, str]]):
        self.calls: list[list[str]] = []
        self.statuses = statuses

    def __call__(self, args):
        self.calls.append(list(args))
        if list(args[:2]) == ["queue", "status"]:
            now = self.statuses.pop(0) if len(self.statuses) > 1 else self.statuses[0]
            rows = [f"{i:07x}  {n}  04:01 PM   {s}" for i, (n, s) in enumerate(now.items())]
            return (
                "Task     Name    Created    Status\n"
                + "\n".join(rows)
                + "\n\nWorker status: 1 active, 0 idle\n"
            )
        return ""


def test_enqueue_skips_pending_and_clears_stale_names(raw_params):
    cells = sweep.plan(raw_params)[:3]
    a, b, c = (cell.name for cell in cells)
    dvc = FakeDvc([{a: "Running", b: "Failed"}])
    stale = sweep.Experiment(name=c, rev="x", params=None, metrics={})
    pending = sweep.enqueue(dvc, cells, raw_params, [stale])
    assert pending == [a, b, c]
    runs = [call for call in dvc.calls if call[:2] == ["exp", "run"]]
    assert [call[call.index("-n") + 1] for call in runs] == [b, c]  # a is already running
    assert ["queue", "remove", b] in dvc.calls
    assert ["exp", "remove", c] in dvc.calls


def test_wait_polls_until_nothing_is_pending():
    dvc = FakeDvc(
        [
            {"a": "Queued", "b": "Running"},
            {"a": "Running", "b": "Success"},
            {"a": "Failed", "b": "Success"},
        ]
    )
    slept = []
    assert sweep.wait(dvc, ["a", "b"], poll_s=1, sleep=slept.append) == {"a": "Failed", "b": "Success"}
    assert len(slept) == 2


def test_wait_takes_a_task_missing_from_the_queue_twice_as_finished():
    dvc = FakeDvc([{"a": "Running"}, {}, {"a": "Running"}, {}, {"b": "Queued"}])
    assert sweep.wait(dvc, ["a"], poll_s=1, sleep=lambda _: None) == {"a": "Success"}
    # running, missing once (not yet finished), running again, then missing twice in a row: finished
    assert len([c for c in dvc.calls if c[:2] == ["queue", "status"]]) == 5


@pytest.fixture
def stage_dir(tmp_path, monkeypatch):
    """A directory with the repository's params.yaml and presets, and a DVC that has no experiments."""
    (tmp_path / "presets").mkdir()
    for f in (ROOT / "presets").glob("*.yaml"):
        (tmp_path / "presets" / f.name).write_text(f.read_text())
    (tmp_path / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    monkeypatch.chdir(tmp_path)
    fake = FakeDvc([{}])
    monkeypatch.setattr(
        sweep, "run_dvc", lambda args, env=None: "[]" if args[:2] == ["exp", "show"] else fake(args)
    )
    return tmp_path


def test_dry_run_prints_the_plan_and_runs_nothing(stage_dir, capsys):
    table_stage.main(["--dry-run", "--quick"])
    out = capsys.readouterr().out.splitlines()
    quick = yaml.safe_load((ROOT / "presets" / "quick.yaml").read_text())["report"]
    n = len(config.load(ROOT / "params.yaml").report.methods) * len(quick["seeds"]) * len(quick["sparsities"])
    assert len(out) == n and all(line.startswith("queue  dvc exp run --queue -n ") for line in out)
    assert not list(stage_dir.glob("metrics/*"))


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
        table_stage.main([*args, "--dry-run"])


def test_paper_preset_is_the_original_setting(raw_params):
    paper = yaml.safe_load((ROOT / "presets" / "paper.yaml").read_text())
    params = config.parse(sweep.override(raw_params, sweep.flatten(paper), "paper"))
    assert (params.data.name, params.model.arch, params.model.width) == ("cifar10", "resnet18", 64)
    assert (params.data.crop_padding, params.data.flip) == (4, True)
    t = params.train
    assert (t.epochs, t.batch_size, t.lr, t.weight_decay, t.schedule) == (182, 128, 0.1, 2e-4, "multistep")
    assert (t.milestones, t.gamma, t.momentum) == ((90, 135), 0.1, 0.9)
    assert params.tricks.options["lrsi"].iters == 180
    assert params.report.lt_rate == 0.2
    quick = yaml.safe_load((ROOT / "presets" / "quick.yaml").read_text())
    both = config.parse(
        sweep.override(sweep.override(raw_params, sweep.flatten(paper), "p"), sweep.flatten(quick), "q")
    )
    assert both.data.name == "digits" and both.train.epochs < 20


def test_gpu_slots_are_exclusive_and_freed_with_their_holder(tmp_path):
    from tost import gpu_slots

    first, h0 = gpu_slots.claim(tmp_path, 2)
    second, h1 = gpu_slots.claim(tmp_path, 2)
    assert (first, second) == (0, 1)
    h0.close()  # the process holding GPU 0 ended
    third, h2 = gpu_slots.claim(tmp_path, 2)
    assert third == 0
    h1.close()
    h2.close()


def test_runtime_claims_a_gpu_of_its_own_in_a_parallel_sweep(tmp_path, monkeypatch):
    import torch

    from tost.runtime import Runtime

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    chosen = []
    monkeypatch.setattr(torch.cuda, "set_device", chosen.append)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: chosen[-1])
    monkeypatch.setenv("TOST_GPU_LOCK_DIR", str(tmp_path))
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    first = Runtime.detect("cuda", True, True, False)
    second = Runtime.detect("cuda", True, True, False)
    assert (first.device.index, second.device.index) == (0, 1)
    first.gpu_lock.close()
    assert Runtime.detect("cuda", True, True, False).device.index == 0


def test_rows_follow_the_table_order_and_old_commits_are_opt_in():
    df = aggregate(runs_two_seeds(), ["baseline", "tost"], ["snip", "random"])
    assert list(dict.fromkeys(df.method)) == ["snip", "random"]
    calls = []
    sweep.experiments(lambda args: calls.append(list(args)) or "[]")
    sweep.experiments(lambda args: calls.append(list(args)) or "[]", all_commits=True)
    assert "-A" not in calls[0] and "-A" in calls[1]
