"""The paper-style table: aggregation and the noise rule, markdown, plots (pure functions, no DVC)."""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import pytest

from sweep.table import Run, aggregate, gain_heatmap, sparsity_plot, to_markdown
from tests.sweep.fakes import pixels

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
    assert base["seeds"] == "0 1" and base["values"] == "90.0000 92.0000"  # paired by seed across tables
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
    # the data are drawn, not only the axes: the +4.5 cell is the deep blue end of RdBu, and both
    # variants' lines are there in matplotlib's first two colours
    heat = plt.imread(tmp_path / "gain.png")[..., :3]
    assert pixels(heat, (0.02, 0.19, 0.38)) > 2000  # RdBu at its maximum (the colour bar alone: 100)
    lines = plt.imread(tmp_path / "sparsity.png")[..., :3]
    assert pixels(lines, (0.12, 0.47, 0.71)) > 50 and pixels(lines, (1.0, 0.50, 0.05)) > 50  # C0, C1


def test_rows_follow_the_table_order():
    df = aggregate(runs_two_seeds(), ["baseline", "tost"], ["snip", "random"])
    assert list(dict.fromkeys(df.method)) == ["snip", "random"]


def test_collapsed_masks_are_flagged_with_the_seeds_they_hit():
    runs = [*runs_two_seeds(), Run("s1", "snip", 0.9, 1, {"baseline": 70.0, "tost": 72.0}, empty_layers=3)]
    df = aggregate(runs, ["baseline", "tost"], ["random", "snip"])
    assert (
        row(df, "snip", "tost")["collapsed_seeds"] == 1 and row(df, "random", "tost")["collapsed_seeds"] == 0
    )
    md = to_markdown(df, ["baseline", "tost"], ["random", "snip"], "t")
    assert "| SNIP † 1/2 |" in md and "| RP |" in md
    assert "† layer collapse" in md
    assert "†" not in to_markdown(aggregate(runs_two_seeds(), ["baseline"]), ["baseline"], ["random"], "t")


def test_a_diverged_seed_is_counted_and_marked_in_its_cell():
    runs = [
        *runs_two_seeds(),
        Run("s1", "snip", 0.9, 1, {"baseline": 70.0, "tost": 10.0}, diverged={"tost": 15}),
    ]
    df = aggregate(runs, ["baseline", "tost"], ["random", "snip"])
    assert (
        row(df, "snip", "tost")["diverged_seeds"] == 1 and row(df, "snip", "baseline")["diverged_seeds"] == 0
    )
    md = to_markdown(df, ["baseline", "tost"], ["random", "snip"], "t")
    (snip,) = [ln for ln in md.splitlines() if ln.startswith("| SNIP")]
    assert (
        snip.split(" | ")[2].split(" ")[4] == "§1" and "§" not in snip.split(" | ")[1]
    )  # tost's, not baseline's
    assert "§k: in k of the seeds the loss became non-finite" in md
    assert "§" not in to_markdown(aggregate(runs_two_seeds(), ["baseline"]), ["baseline"], ["random"], "t")


def test_the_weights_each_variant_trains_and_is_evaluated_with_are_shown():
    w = {"baseline": (13_500, 13_500), "tost": (43_196, 13_500)}
    runs = [Run("r0", "random", 0.95, 0, {"baseline": 90.0, "tost": 91.0}, weights=w, rev="abc")]
    df = aggregate(runs, ["baseline", "tost"])
    assert (
        row(df, "random", "tost")["weights_trained"] == 43_196 and row(df, "random", "tost")["revs"] == "abc"
    )
    md = to_markdown(df, ["baseline", "tost"], ["random"], "t")
    assert "baseline 13.5k → 13.5k, tost 43.2k → 13.5k." in md


def test_each_row_names_the_precision_and_machine_its_records_name():
    """A study completed over sittings on two CPUs says so per row; records without one say so too."""
    import json

    from sweep import plan

    a = {"cpu": "AMD EPYC 9B14", "cpu_capability": "AVX512", "threads": 1, "torch": "2.14.1",
         "device": "cpu", "precision": "bf16", "compiled": False}  # fmt: skip
    b = {**a, "cpu": "Intel(R) Xeon(R) Processor", "precision": "fp32"}
    files = {("r0", "baseline"): a, ("r0", "tost"): a, ("r1", "baseline"): b}  # r1's tost: no machine
    runs = [
        plan.with_machines(
            Run(f"e{s}", "snip", 0.99, s, {"baseline": 80.0 + s, "tost": 81.0}, rev=f"r{s}"),
            lambda path, rev=f"r{s}": (
                json.dumps({"machine": files[(rev, path.split("/")[-1][:-5])]})
                if (rev, path.split("/")[-1][:-5]) in files
                else json.dumps({})
            ),
        )
        for s in (0, 1)
    ]
    df = aggregate(runs, ["baseline", "tost"])
    base, tost = row(df, "snip", "baseline"), row(df, "snip", "tost")
    assert base["precision"] == "bf16 fp32" and "AMD EPYC 9B14 (AVX512)" in base["machines"]
    assert "Intel(R) Xeon(R) Processor (AVX512)" in base["machines"]
    assert tost["precision"] == "bf16" and tost["machines"].endswith("; unrecorded")
    md = to_markdown(df, ["baseline", "tost"], ["snip"], "t")
    assert "Made on: AMD EPYC 9B14 (AVX512), 1 thread, torch 2.14.1, cpu, bf16, eager; " in md
