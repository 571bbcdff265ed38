"""`python -m sweep.compare`: one trick's gain under several settings, side by side, from sweep tables.

A schedule study (README, "Does ToST help?") runs the same cells under several trick settings, one
`python -m sweep` table each. Choosing between the settings means reading the same gain across
those tables; this puts them in one table and one plot. It reads the tables' CSVs only, so the
comparison is exactly what the committed tables say.

A setting whose evaluated network has more weights than `baseline` (tricks kept to the end, as the
original code ran them) is marked: its gain is not that of the plain sparse network.

Tables that record each seed's accuracy (the `seeds` and `values` columns) are also compared with the
first setting seed by seed: a seed gives the same mask and init under every setting, so the paired
difference isolates the setting and its noise can be judged as the tables judge gains.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from sweep.table import LABELS, within_noise
from tost.io import atomic_path, write_text

COLUMNS = ["method", "sparsity", "variant", "n_seeds", "mean", "gain", "within_noise", "weights_evaluated"]
PER_SEED = ["seeds", "values"]  # optional: tables made before they were recorded lack them
OPTIONAL = ["gain_std", "collapsed_seeds", "diverged_seeds", "cut_seeds", "precision", *PER_SEED]


def load(settings: Mapping[str, Path] | Sequence[tuple[str, Path]], same_cells: bool = True) -> pd.DataFrame:
    """The named tables in one long frame, with a `setting` column.

    A name given twice joins its tables (a setting measured at several sparsities, in several
    tables). With `same_cells` every setting must cover the same methods and sparsities.
    """
    pairs = list(settings.items()) if isinstance(settings, Mapping) else list(settings)
    frames = []
    for name, path in pairs:
        if not path.exists():
            raise FileNotFoundError(f"{name}: {path}: no such table (run `python -m sweep` first)")
        df = pd.read_csv(path, dtype={c: str for c in [*PER_SEED, "cut_seeds"]})
        missing = [c for c in COLUMNS if c not in df.columns]
        if missing:
            raise ValueError(f"{name}: {path}: not a sweep table (no column {', '.join(missing)})")
        frames.append(df.reindex(columns=COLUMNS + OPTIONAL).assign(setting=name))
    both = pd.concat(frames, ignore_index=True)
    if not same_cells:
        return both
    cells = {name: set(zip(g.method, g.sparsity, strict=True)) for name, g in both.groupby("setting")}
    first, *rest = dict(pairs)
    for name in rest:
        if cells[name] != cells[first]:
            raise ValueError(f"{name} and {first} do not cover the same methods and sparsities")
    return both


def summary(df: pd.DataFrame) -> pd.DataFrame:
    """Per setting and trick: the mean gain over the cells, and whether its network is larger."""
    base = df[df.variant == "baseline"].set_index(["setting", "method", "sparsity"]).weights_evaluated
    tricks = df[df.variant != "baseline"].copy()
    keys = list(zip(tricks.setting, tricks.method, tricks.sparsity, strict=True))
    tricks["larger"] = tricks.weights_evaluated.to_numpy() > base.loc[keys].to_numpy()
    return tricks.groupby(["setting", "variant"], sort=False).agg(
        gain=("gain", "mean"), larger=("larger", "any"), n_seeds=("n_seeds", "min")
    )


def _per_seed(seeds: object, values: object) -> dict[int, float]:
    """A cell's accuracy by seed, from the table's space-separated columns; empty where not recorded."""
    if not isinstance(seeds, str) or not isinstance(values, str):
        return {}
    return {int(s): float(v) for s, v in zip(seeds.split(), values.split(), strict=True)}


def versus(df: pd.DataFrame, reference: str) -> pd.DataFrame:
    """Per setting and trick: its accuracy minus the reference setting's, over the (cell, seed) pairs.

    Returns mean, std and count of the differences; settings without per-seed values have no rows.
    """
    ref = {
        (r.method, r.sparsity, r.variant): _per_seed(r.seeds, r.values)
        for r in df[df.setting == reference].itertuples()
    }
    diffs = []
    for r in df[(df.setting != reference) & (df.variant != "baseline")].itertuples():
        mine, theirs = _per_seed(r.seeds, r.values), ref.get((r.method, r.sparsity, r.variant), {})
        diffs += [(r.setting, r.variant, mine[s] - theirs[s]) for s in sorted(mine.keys() & theirs.keys())]
    frame = pd.DataFrame(diffs, columns=["setting", "variant", "delta"])
    return frame.groupby(["setting", "variant"])["delta"].agg(["mean", "std", "count"])


def _versus_markdown(df: pd.DataFrame, settings: Sequence[str]) -> list[str]:
    """The paired differences against the first setting, one column per other setting."""
    reference, others = settings[0], settings[1:]
    diffs = versus(df, reference)
    lines = [
        f"Against `{reference}`, paired by cell and seed (the same mask and init): the trick's accuracy "
        f"minus its accuracy under `{reference}`, mean ± std (pairs); `~`: within noise (|mean| < 2 × std). "
        "— : the table has no per-seed values.",
        "",
        "| variant | " + " | ".join(others) + " |",
        "|---" * (len(others) + 1) + "|",
    ]
    for variant in [v for v in dict.fromkeys(df.variant) if v != "baseline"]:
        row = []
        for s in others:
            if (s, variant) not in diffs.index:
                row.append("—")
                continue
            d = diffs.loc[(s, variant)]
            # no difference at all (a trick the setting does not touch, such as lrsi) is noise too
            noisy = d["mean"] == 0 or within_noise(d["mean"], d["std"])
            row.append(f"{d['mean']:+.2f}{'~' if noisy else ''} ± {d['std']:.2f} ({int(d['count'])})")
        lines.append(f"| {variant} | " + " | ".join(row) + " |")
    return [*lines, ""]


def format_gain(row: pd.Series) -> str:
    """A cell's gain as the comparison prints it: sign, `~` when within noise, ± its spread if known."""
    spread = f" ± {row.gain_std:.2f}" if pd.notna(row.gain_std) else ""
    return f"{row.gain:+.2f}{'~' if row.within_noise else ''}{spread}"


def to_markdown(df: pd.DataFrame, settings: Sequence[str], title: str, paired: bool = True) -> str:
    """Variants as rows, settings as columns: each cell's gain per method, then their mean in bold.

    `paired`: also compare every setting with the first seed by seed, which is meaningful only when a
    seed gives the same mask and init under every setting (not across widths or data sizes).
    """
    means = summary(df)
    cells = df[["method", "sparsity"]].drop_duplicates().sort_values(["sparsity", "method"])
    order = [(m, s) for m, s in zip(cells.method, cells.sparsity, strict=True)]
    names = ", ".join(f"{LABELS.get(m, m)} {s:g}" for m, s in order)
    lines = [f"# {title}", "", f"Gain over `baseline` per cell ({names}), then their mean.", ""]
    lines += ["| variant | " + " | ".join(settings) + " |", "|---" * (len(settings) + 1) + "|"]
    base = df[df.variant == "baseline"].set_index(["setting", "method", "sparsity"])
    row = [" / ".join(f"{base.loc[(s, m, sp), 'mean']:.2f}" for m, sp in order) for s in settings]
    lines.append("| baseline (accuracy) | " + " | ".join(row) + " |")
    for variant in [v for v in dict.fromkeys(df.variant) if v != "baseline"]:
        part = df[df.variant == variant].set_index(["setting", "method", "sparsity"])
        row = []
        for s in settings:
            if (s, variant) not in means.index:  # a setting that did not train this variant
                row.append("—")
                continue
            each = " / ".join(format_gain(part.loc[(s, m, sp)]) for m, sp in order)
            mark = " ‡" if means.loc[(s, variant), "larger"] else ""
            row.append(f"{each} → **{means.loc[(s, variant), 'gain']:+.2f}**{mark}")
        lines.append(f"| {variant} | " + " | ".join(row) + " |")
    seeds = int(df.n_seeds.min())
    lines += [
        "",
        f"At least {seeds} seeds per cell; ± the std of the paired gains. "
        "`~`: within noise (|gain| < 2 × std). "
        "‡: evaluated with more weights than `baseline` (jumps kept in the final network), so not the "
        "plain sparse network's gain. —: the setting did not train the variant.",
        "",
    ]
    if len(settings) > 1 and paired:
        lines += _versus_markdown(df, settings)
    return "\n".join(lines)


def bar_plot(df: pd.DataFrame, settings: Sequence[str], path: Path, title: str) -> None:
    """Mean gain per trick, one bar per setting; hatched bars are evaluated with extra weights."""
    means = summary(df)
    variants = [v for v in dict.fromkeys(df.variant) if v != "baseline"]
    width = 0.8 / len(settings)
    fig, ax = plt.subplots(figsize=(1.3 * len(variants) + 2.5, 3.4))
    x = np.arange(len(variants))
    for i, s in enumerate(settings):
        gains = [means.loc[(s, v), "gain"] if (s, v) in means.index else np.nan for v in variants]
        bars = ax.bar(x + (i - (len(settings) - 1) / 2) * width, gains, width, label=s)
        for bar, v in zip(bars, variants, strict=True):
            if (s, v) in means.index and means.loc[(s, v), "larger"]:
                bar.set_hatch("//")
    ax.axhline(0, color="black", lw=0.8)
    ax.set_xticks(x, variants, rotation=20, ha="right")
    ax.set_ylabel("mean gain over baseline (points)")
    ax.set_title(f"{title}\nhatched: evaluated with the jumps kept (more weights)", fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)


def cell_series(df: pd.DataFrame, settings: Sequence[str]) -> dict[tuple[str, float], pd.DataFrame]:
    """Per cell: one row per trick, each setting's gain and its spread, in the settings' order.

    The budget study asks how each trick's gain moves with the budget, cell by cell; averaging RP and
    SNIP first would hide a trick that flips in one of them. A setting that did not train a trick, or
    a table without spreads, is NaN there (no point, no bar).
    """
    out = {}
    tricks = [v for v in dict.fromkeys(df.variant) if v != "baseline"]
    for (method, sparsity), cell in df[df.variant != "baseline"].groupby(["method", "sparsity"], sort=False):
        by = cell.set_index(["variant", "setting"])
        rows = {
            v: {
                **{(s, "gain"): by.gain.get((v, s), np.nan) for s in settings},
                **{(s, "std"): by.gain_std.get((v, s), np.nan) for s in settings},
            }
            for v in tricks
        }
        out[(method, sparsity)] = pd.DataFrame.from_dict(rows, orient="index")
    return out


def cell_plot(df: pd.DataFrame, settings: Sequence[str], path: Path, title: str) -> None:
    """One panel per cell: each trick's gain ± the std of its paired gains against the settings, in order.

    Lines join the settings because this plot is for ordered settings (budgets); hollow markers are
    evaluated with more weights than `baseline`.
    """
    series = cell_series(df, settings)
    larger = summary(df).larger
    size = (3.6 * len(series) + 1.2, 3.4)
    fig, axes = plt.subplots(1, len(series), figsize=size, sharey=True, squeeze=False)
    x = np.arange(len(settings))
    for ax, ((method, sparsity), frame) in zip(axes[0], series.items(), strict=True):
        for i, (variant, r) in enumerate(frame.iterrows()):
            gains = np.array([r[(s, "gain")] for s in settings], dtype=float)
            spread = np.array([r[(s, "std")] for s in settings], dtype=float)
            hollow = [bool(larger.get((s, variant), False)) for s in settings]
            shift = (i - (len(frame) - 1) / 2) * 0.08  # side by side, so the bars do not overlap
            bars = np.nan_to_num(spread)
            line = ax.errorbar(x + shift, gains, yerr=bars, marker="o", capsize=3, label=variant)
            for xi, g, h in zip(x + shift, gains, hollow, strict=True):
                if h and np.isfinite(g):
                    ax.plot(xi, g, "o", mfc="white", mec=line[0].get_color())
        ax.axhline(0, color="black", lw=0.8)
        ax.set_xticks(x, settings, rotation=15)
        ax.set_title(f"{LABELS.get(method, method)} {sparsity:g}", fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].set_ylabel("gain over baseline (points)")
    axes[0][-1].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1))  # beside: no point hidden
    note = "mean ± std of the paired gains over seeds; hollow: evaluated with more weights"
    fig.suptitle(f"{title}\n{note}", fontsize=9)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)


def _gain_cell(row: pd.Series) -> str:
    """A gain, with §k where k of its seeds diverged (the variant's, not baseline's)."""
    diverged = row.get("diverged_seeds")
    return format_gain(row) + (f" §{int(diverged)}" if pd.notna(diverged) and diverged else "")


def sparsity_markdown(df: pd.DataFrame, settings: Sequence[str], title: str) -> str:
    """Rows: each trick under each setting; columns: method × sparsity; cells: gain ± spread.

    The high-sparsity question reads a trick's gain along the sparsities of one mask method, and the
    settings (default windows, the original's protocol) side by side in rows.
    """
    cells = df[["method", "sparsity"]].drop_duplicates()
    methods = list(dict.fromkeys(cells.sort_values("sparsity").method))
    order = [(m, sp) for m in methods for sp in sorted(cells[cells.method == m].sparsity)]
    head = [f"{LABELS.get(m, m)} {sp:g}" for m, sp in order]
    lines = [
        f"# {title}",
        "",
        "| variant | setting | " + " | ".join(head) + " |",
        "|---" * (len(head) + 2) + "|",
    ]
    at = df.set_index(["setting", "variant", "method", "sparsity"])
    base = (
        df[df.variant == "baseline"].drop_duplicates(["method", "sparsity"]).set_index(["method", "sparsity"])
    )
    row = []
    for m, sp in order:
        b = base.loc[(m, sp)]
        collapsed = int(b.collapsed_seeds) if pd.notna(b.collapsed_seeds) else 0
        diverged = int(b.diverged_seeds) if pd.notna(b.get("diverged_seeds")) else 0
        cut = str(b.get("cut_seeds")) if pd.notna(b.get("cut_seeds")) else ""
        marks = (f" †{collapsed}/{int(b.n_seeds)}" if collapsed else "") + (
            f" §{diverged}" if diverged else ""
        )
        row.append(f"{b['mean']:.2f}{marks}" + (f" ✂ seed {cut}" if cut.strip() else ""))
    lines.append("| baseline (accuracy) | | " + " | ".join(row) + " |")
    larger = summary(df).larger
    for variant in [v for v in dict.fromkeys(df.variant) if v != "baseline"]:
        for s in settings:
            if (s, variant) not in larger.index:
                continue
            cells_txt = [_gain_cell(at.loc[(s, variant, m, sp)]) if (s, variant, m, sp) in at.index else "—"
                         for m, sp in order]  # fmt: skip
            mark = " ‡" if larger.loc[(s, variant)] else ""
            lines.append(f"| {variant} | {s}{mark} | " + " | ".join(cells_txt) + " |")
    precisions = sorted(
        {p for p in df.get("precision", pd.Series(dtype=str)).dropna() for p in str(p).split()}
    )
    lines += [
        "",
        "Gain over `baseline` in points, mean ± std of the paired gains over seeds; `~`: within noise "
        "(|gain| < 2 × std). †k/n: in k of n seeds the mask empties whole layers (layer collapse). "
        "‡: evaluated with more weights than `baseline` (the jumps kept in the final network). "
        "§k: in k seeds the variant's loss became non-finite and its run stopped there, with the "
        "epochs before as its result (`train.on_divergence: stop`). ✂ seed k: the mask of seed k "
        "leaves no path from input to output, so no variant is trained and the seed is not in the means. "
        f"—: not measured. Precision of the runs: {', '.join(precisions) or 'not recorded'}.",
        "",
    ]
    return "\n".join(lines)


def sparsity_plot(df: pd.DataFrame, settings: Sequence[str], path: Path, title: str) -> None:
    """One panel per mask method: each trick's gain ± spread against sparsity, a line style per setting.

    Colour is the trick, solid the first setting and dashed the others; hollow markers are evaluated
    with more weights than `baseline`.
    """
    methods = list(dict.fromkeys(df.sort_values("sparsity").method))
    sparsities = sorted(df.sparsity.unique())
    tricks = [v for v in dict.fromkeys(df.variant) if v != "baseline"]
    colours = {v: plt.get_cmap("tab10")(i) for i, v in enumerate(tricks)}
    styles = dict(zip(settings, ["-", "--", ":", "-."] * 2, strict=False))
    larger = summary(df).larger
    fig, axes = plt.subplots(
        1, len(methods), figsize=(4.2 * len(methods) + 1.8, 3.6), sharey=True, squeeze=False
    )
    x = {sp: i for i, sp in enumerate(sparsities)}
    for ax, method in zip(axes[0], methods, strict=True):
        for i, variant in enumerate(tricks):
            for j, s in enumerate(settings):
                part = df[(df.method == method) & (df.variant == variant) & (df.setting == s)].sort_values(
                    "sparsity"
                )
                if part.empty:
                    continue
                xs = np.array([x[sp] for sp in part.sparsity]) + (i * len(settings) + j - 2) * 0.04
                std = np.nan_to_num(part.gain_std.to_numpy(dtype=float))
                face = "white" if larger.get((s, variant), False) else colours[variant]
                ax.errorbar(xs, part.gain, yerr=std, marker="o", capsize=3, ls=styles[s], mfc=face,
                            color=colours[variant], label=f"{variant} ({s})")  # fmt: skip
        ax.axhline(0, color="black", lw=0.8)
        ax.set_xticks(range(len(sparsities)), [f"{sp:g}" for sp in sparsities])
        ax.set_xlabel("sparsity")
        ax.set_title(LABELS.get(method, method), fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].set_ylabel("gain over baseline (points)")
    axes[0][-1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1))
    note = "mean ± std of the paired gains over seeds; hollow: evaluated with more weights"
    fig.suptitle(f"{title}\n{note}", fontsize=9)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)


def parse_setting(text: str) -> tuple[str, Path]:
    """One positional argument, NAME=path/to/table.csv: the name heads its column."""
    name, sep, path = text.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"{text!r}: expected NAME=TABLE.csv")
    return name, Path(path)


def main(argv: list[str] | None = None) -> None:
    """Read the named tables, write OUT.md and OUT.png."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("settings", nargs="+", type=parse_setting, help="NAME=TABLE.csv, in column order")
    ap.add_argument("--out", required=True, help="output prefix: writes OUT.md and OUT.png")
    ap.add_argument("--title", default="Schedule study", help="first line of the table and the plot")
    ap.add_argument(
        "--unpaired", action="store_true",
        help="settings differ in model or data, so a seed's mask and init differ: no seed-by-seed comparison",
    )  # fmt: skip
    ap.add_argument(
        "--plot", choices=["means", "cells", "sparsity"], default="means",
        help="means: one bar per setting of each trick's mean gain; cells: one panel per cell, each "
        "trick's gain ± its spread against the settings in order (for ordered settings such as budgets); "
        "sparsity: one panel per mask method, each trick's gain against sparsity, a line per setting "
        "(a setting's name may repeat to join its tables of several sparsities)",
    )  # fmt: skip
    args = ap.parse_args(argv)
    names = list(dict.fromkeys(name for name, _ in args.settings))
    by_sparsity = args.plot == "sparsity"
    try:
        df = load(args.settings, same_cells=not by_sparsity)
    except (FileNotFoundError, ValueError) as e:
        ap.exit(2, f"sweep.compare: {e}\n")
    if by_sparsity:
        md = sparsity_markdown(df, names, args.title)
    else:
        md = to_markdown(df, names, args.title, not args.unpaired)
    write_text(Path(f"{args.out}.md"), md)
    plot = {"cells": cell_plot, "sparsity": sparsity_plot}.get(args.plot, bar_plot)
    plot(df, names, Path(f"{args.out}.png"), args.title)
    print(f"sweep.compare: wrote {args.out}.md, {args.out}.png")


if __name__ == "__main__":
    main()
