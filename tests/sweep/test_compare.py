"""Comparing one trick's gain across several sweep tables (the schedule study)."""

from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd
import pytest

from sweep import compare
from tests.sweep.fakes import pixels


def row(method: str, variant: str, n_seeds: int, gain: float, noisy: bool, evaluated: int) -> dict:
    """One line of a sweep CSV, with the columns the comparison reads."""
    return dict(method=method, sparsity=0.95, variant=variant, n_seeds=n_seeds, mean=70.0 + gain,
                gain=gain, within_noise=noisy, weights_evaluated=evaluated)  # fmt: skip


def table(path, gains: dict[str, tuple[float, ...]], evaluated: int = 100, methods=("random", "snip")):
    """A sweep CSV: baseline at 70/71 %, each variant's gain per method, its evaluated weights."""
    rows = []
    for i, method in enumerate(methods):
        rows.append({**row(method, "baseline", 2, float("nan"), False, 100), "mean": 70.0 + i})
        rows += [row(method, v, 3, g[i], i == 1, evaluated) for v, g in gains.items()]
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def test_each_setting_is_a_column_with_per_cell_gains_and_their_mean(tmp_path):
    a = table(tmp_path / "a.csv", {"ghost_skip": (-4.0, -1.0), "tost": (1.0, 2.0)})
    b = table(tmp_path / "b.csv", {"ghost_skip": (-1.0, 0.0), "tost": (0.5, 0.5)}, evaluated=300)
    df = compare.load({"default": a, "upstream": b})
    md = compare.to_markdown(df, ["default", "upstream"], "Study")
    assert "| variant | default | upstream |" in md
    assert "| baseline (accuracy) | 70.00 / 71.00 | 70.00 / 71.00 |" in md
    assert "| ghost_skip | -4.00 / -1.00~ → **-2.50** | -1.00 / +0.00~ → **-0.50** ‡ |" in md
    assert "| tost | +1.00 / +2.00~ → **+1.50** | +0.50 / +0.50~ → **+0.50** ‡ |" in md
    assert "RP 0.95, SNIP 0.95" in md and "At least 2 seeds" in md


def test_main_writes_the_table_and_the_plot(tmp_path, capsys):
    a = table(tmp_path / "a.csv", {"tost": (1.0, 2.0)})
    b = table(tmp_path / "b.csv", {"tost": (0.5, 0.5)}, evaluated=300)
    out = tmp_path / "cmp"
    compare.main([f"default={a}", f"upstream={b}", "--out", str(out), "--title", "T"])
    assert (tmp_path / "cmp.md").read_text().startswith("# T")
    bars = plt.imread(tmp_path / "cmp.png")[..., :3]
    assert pixels(bars, (0.12, 0.47, 0.71)) > 500 and pixels(bars, (1.0, 0.50, 0.05)) > 500  # both settings
    assert "wrote" in capsys.readouterr().out


def not_a_table(path):
    pd.DataFrame({"method": ["random"]}).to_csv(path)
    return path


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: p / "none.csv", "no such table"),
        (lambda p: not_a_table(p / "x.csv"), "not a sweep table"),
        (lambda p: table(p / "x.csv", {"tost": (1.0,)}, methods=("random",)), "do not cover the same"),
    ],
)
def test_bad_tables_are_refused_in_one_line(tmp_path, capsys, make, message):
    good = table(tmp_path / "good.csv", {"tost": (1.0, 2.0)})
    with pytest.raises(SystemExit) as e:
        compare.main([f"a={good}", f"b={make(tmp_path)}", "--out", str(tmp_path / "o")])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_a_setting_must_be_named(tmp_path, capsys):
    with pytest.raises(SystemExit):
        compare.main(["table.csv", "--out", str(tmp_path / "o")])
    assert "expected NAME=TABLE.csv" in capsys.readouterr().err


def with_seeds(path, per_seed: dict[tuple[str, str], dict[int, float]]):
    """Adds the per-seed columns to a sweep CSV: (method, variant) -> {seed: accuracy}."""
    df = pd.read_csv(path)
    cells = [per_seed.get((m, v), {}) for m, v in zip(df.method, df.variant, strict=True)]
    df["seeds"] = [" ".join(str(s) for s in c) for c in cells]
    df["values"] = [" ".join(f"{a:.4f}" for a in c.values()) for c in cells]
    df.to_csv(path, index=False)
    return path


def test_settings_are_compared_with_the_first_seed_by_seed(tmp_path):
    gains = {"ghost_skip": (-4.0, -1.0), "tost": (1.0, 2.0), "lrsi": (0.0, 0.0)}
    default = with_seeds(table(tmp_path / "d.csv", gains), {
        ("random", "ghost_skip"): {0: 60.0, 1: 62.0, 2: 50.0}, ("snip", "ghost_skip"): {0: 70.0, 1: 70.0},
        ("random", "tost"): {0: 70.0, 1: 70.0}, ("snip", "tost"): {0: 71.0, 1: 72.0},
        ("random", "lrsi"): {0: 66.0, 1: 67.0}, ("snip", "lrsi"): {0: 68.0, 1: 69.0},
    })  # fmt: skip
    early = with_seeds(table(tmp_path / "e.csv", gains), {
        ("random", "ghost_skip"): {0: 64.0, 1: 65.0}, ("snip", "ghost_skip"): {0: 72.0, 1: 73.0},
        ("random", "tost"): {0: 71.0, 1: 69.0}, ("snip", "tost"): {0: 71.0, 1: 72.0},
        ("random", "lrsi"): {0: 66.0, 1: 67.0}, ("snip", "lrsi"): {0: 68.0, 1: 69.0},
    })  # fmt: skip
    old = table(tmp_path / "o.csv", gains)  # made before per-seed values were recorded
    df = compare.load({"default": default, "early": early, "old": old})
    diffs = compare.versus(df, "default")
    ghost = diffs.loc[("early", "ghost_skip")]
    assert ghost["mean"] == pytest.approx(3.0) and ghost["count"] == 4  # +4 +3 +2 +3; seed 2 has no pair
    assert ("old", "ghost_skip") not in diffs.index
    md = compare.to_markdown(df, ["default", "early", "old"], "Study")
    assert "Against `default`, paired by cell and seed" in md
    assert "| variant | early | old |" in md
    assert "| ghost_skip | +3.00 ± 0.82 (4) | — |" in md  # 3.00 >= 2 * 0.82: beyond noise
    assert "| tost | +0.00~ ± 0.82 (4) | — |" in md  # +1 -1 0 0
    assert "| lrsi | +0.00~ ± 0.00 (4) | — |" in md  # untouched by the setting: no difference at all


def test_a_variant_one_setting_did_not_train_is_a_dash_and_gains_show_their_spread(tmp_path, capsys):
    # the budget study: today's table has six variants, the larger budgets four
    a = table(tmp_path / "a.csv", {"ghost_skip": (-4.0, -1.0), "lrsi": (0.5, 0.5)})
    b = pd.read_csv(table(tmp_path / "b.csv", {"ghost_skip": (-1.0, 0.0)})).assign(gain_std=0.25)
    b.to_csv(tmp_path / "b.csv", index=False)
    out = tmp_path / "cmp"
    compare.main([f"3k={a}", f"12k={tmp_path / 'b.csv'}", "--out", str(out), "--unpaired"])
    md = (tmp_path / "cmp.md").read_text()
    assert "| lrsi | +0.50 / +0.50~ → **+0.50** | — |" in md
    assert "| ghost_skip | -4.00 / -1.00~ → **-2.50** | -1.00 ± 0.25 / +0.00~ ± 0.25 → **-0.50** |" in md
    assert "Against `3k`" not in md  # --unpaired: a seed's mask differs between the settings
    assert (tmp_path / "cmp.png").stat().st_size > 1000


def test_cells_plot_each_tricks_gain_and_spread_per_cell_in_the_settings_order(tmp_path):
    # the budget study's plot: a trick that flips in one cell must not be averaged away
    a = table(tmp_path / "a.csv", {"ghost_skip": (-4.0, -1.0), "lrsi": (0.5, 0.5)})
    b = pd.read_csv(table(tmp_path / "b.csv", {"ghost_skip": (-1.0, 2.0)})).assign(gain_std=0.25)
    b.to_csv(tmp_path / "b.csv", index=False)
    df = compare.load({"small": a, "large": tmp_path / "b.csv"})
    series = compare.cell_series(df, ["small", "large"])
    assert list(series) == [("random", 0.95), ("snip", 0.95)]
    snip = series[("snip", 0.95)]
    assert list(snip.index) == ["ghost_skip", "lrsi"]
    assert snip.loc["ghost_skip", ("small", "gain")] == -1.0
    assert snip.loc["ghost_skip", ("large", "gain")] == 2.0
    assert snip.loc["ghost_skip", ("large", "std")] == 0.25
    assert pd.isna(snip.loc["ghost_skip", ("small", "std")])  # the small table has no spreads
    assert pd.isna(snip.loc["lrsi", ("large", "gain")])  # not trained at the large budget
    out = str(tmp_path / "c")
    compare.main([f"small={a}", f"large={tmp_path / 'b.csv'}", "--out", out, "--plot", "cells"])
    img = plt.imread(tmp_path / "c.png")[..., :3]
    assert pixels(img, (0.12, 0.47, 0.71)) > 100 and pixels(img, (1.0, 0.50, 0.05)) > 100  # both tricks
    assert img.shape[1] > 800  # two panels side by side


def test_gains_against_sparsity_join_a_settings_tables_and_show_both_protocols(tmp_path):
    """The sparsity study: 0.95 from one table, 0.99 from another, under one setting name; the
    original protocol (more weights evaluated) only at 0.99; layer collapse marked on the baseline."""
    at95 = pd.read_csv(table(tmp_path / "95.csv", {"ghost_skip": (-0.6, -0.3), "tost": (-1.0, -0.7)}))
    at99 = at95.assign(sparsity=0.99, gain_std=0.5, collapsed_seeds=0)
    at99.loc[at99.gain.notna(), "gain"] = [1.0, 0.2, 2.0, 0.4]  # ghost_skip, tost for random; then snip
    at99.loc[(at99.method == "snip") & (at99.variant == "baseline"), "collapsed_seeds"] = 2
    at99["diverged_seeds"] = 0
    at99.loc[(at99.method == "random") & (at99.variant == "ghost_skip"), "diverged_seeds"] = 1
    at99["cut_seeds"] = ""
    at99.loc[at99.method == "random", "cut_seeds"] = "2"  # seed 2's mask cut the network
    at99.to_csv(tmp_path / "99.csv", index=False)
    up = at99[at99.variant != "tost"].assign(gain=[float("nan"), 3.0, float("nan"), 4.0], diverged_seeds=0)
    up.loc[up.variant != "baseline", "weights_evaluated"] = 300
    up.to_csv(tmp_path / "up.csv", index=False)
    out = tmp_path / "sp"
    compare.main([f"default={tmp_path / '95.csv'}", f"default={tmp_path / '99.csv'}",
                  f"upstream={tmp_path / 'up.csv'}", "--out", str(out), "--plot", "sparsity"])  # fmt: skip
    md = (tmp_path / "sp.md").read_text()
    assert "| variant | setting | RP 0.95 | RP 0.99 | SNIP 0.95 | SNIP 0.99 |" in md
    assert "| baseline (accuracy) | | 70.00 | 70.00 ✂ seed 2 | 71.00 | 71.00 †2/2 |" in md
    assert "✂ seed k: the mask of seed k leaves no path" in md
    assert (
        "| ghost_skip | default | -0.60 | +1.00 ± 0.50 §1 | -0.30~ | +2.00~ ± 0.50 |" in md
    )  # a seed diverged
    assert "| ghost_skip | upstream ‡ | — | +3.00 ± 0.50 | — | +4.00~ ± 0.50 |" in md
    assert "| tost | default |" in md and "| tost | upstream" not in md  # not trained that way
    img = plt.imread(tmp_path / "sp.png")[..., :3]
    assert pixels(img, (0.12, 0.47, 0.71)) > 100 and pixels(img, (1.0, 0.50, 0.05)) > 100  # both tricks
