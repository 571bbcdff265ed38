"""The paper's main table from many finished runs: methods × variants, mean ± std over seeds.

Pure functions over plain records (one per finished DVC experiment), so the aggregation, the noise
rule and the plots are tested without running DVC. `sweep.plan` turns `dvc exp show --json` into
these records; `sweep.__main__` wires the two together.

The noise rule: a trick's gain over `baseline` is compared seed by seed (the same seed means the same
mask and the same initialisation), and a cell is flagged when |mean gain| < 2 × the standard deviation
of those paired gains. With one seed there is no spread to compare with, so nothing can be called
signal and every gain is flagged.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from tost.io import atomic_path, write_text

# The paper's row labels for each canonical method key.
LABELS = {
    "random": "RP",
    "magnitude": "OMP",
    "gmp": "GMP",
    "taylor": "TP",
    "snip": "SNIP",
    "grasp": "GraSP",
    "synflow": "SynFlow",
    "lt": "LT",
}


@dataclass(frozen=True)
class Run:
    """One finished experiment: which cell of the sweep it is, and each variant's accuracy."""

    experiment: str
    method: str
    sparsity: float
    seed: int
    accuracy: dict[str, float]  # variant -> test accuracy (%)
    empty_layers: int = 0  # layers the mask pruned empty (layer collapse), from metrics/mask.json
    weights: dict[str, tuple[int, int]] = field(default_factory=dict)  # variant -> (trained, evaluated)
    rev: str = ""  # the experiment's git commit (`dvc exp apply` takes it back)
    machines: dict[str, str] = field(default_factory=dict)  # variant -> the machine that trained it
    diverged: dict[str, int] = field(default_factory=dict)  # variant -> epoch its loss went non-finite
    cut: str = ""  # why the mask leaves no path from input to output; then no variant was trained


def made_on(runs: Sequence[Run], variant: str) -> tuple[str, str]:
    """(precisions, machines) of a cell's runs of `variant`: the distinct ones, `; `-joined.

    A cell completed over several sittings may hold runs of two CPUs or precisions; the row says so.
    """
    named = sorted({r.machines.get(variant, "unrecorded") for r in runs})
    precisions = sorted({m.rsplit(", ", 2)[-2] for m in named if m != "unrecorded"} or {"unrecorded"})
    return " ".join(precisions), "; ".join(named)


def _std(values: Sequence[float]) -> float:
    """Sample standard deviation (n − 1); NaN for fewer than two values."""
    return float(np.std(values, ddof=1)) if len(values) > 1 else math.nan


def within_noise(mean: float, std: float) -> bool:
    """A paired mean is noise unless at least twice the std of its pairs; NaN std (one pair) is noise."""
    return not abs(mean) >= 2 * std


def aggregate(runs: Iterable[Run], variants: Sequence[str], methods: Sequence[str] = ()) -> pd.DataFrame:
    """One row per (method, sparsity, variant): mean, std, seeds, the gain over baseline and its noise.

    Runs of the same (method, sparsity, seed) are deduplicated (the first wins) so that an
    experiment that was run twice is not counted as two seeds.
    """
    cells: dict[tuple[str, float, int], Run] = {}
    for run in runs:
        cells.setdefault((run.method, run.sparsity, run.seed), run)
    rows = []
    order = {m: i for i, m in enumerate(methods)}  # rows in the table's order, others after, by name
    keys = {(m, s) for m, s, _ in cells}
    for method, sparsity in sorted(keys, key=lambda k: (k[1], order.get(k[0], len(order)), k[0])):
        seeded = sorted(
            (r for (m, s, _), r in cells.items() if (m, s) == (method, sparsity)), key=lambda r: r.seed
        )
        for variant in variants:
            have = [r for r in seeded if variant in r.accuracy]
            values = [r.accuracy[variant] for r in have]
            paired = [r.accuracy[variant] - r.accuracy["baseline"] for r in have if "baseline" in r.accuracy]
            gain = float(np.mean(paired)) if paired and variant != "baseline" else math.nan
            gain_std = _std(paired) if variant != "baseline" else math.nan
            noisy = variant != "baseline" and bool(paired) and within_noise(gain, gain_std)
            rows.append(
                {
                    "method": method,
                    "label": LABELS.get(method, method),
                    "sparsity": sparsity,
                    "variant": variant,
                    "n_seeds": len(values),
                    "seeds": " ".join(str(r.seed) for r in have),
                    "values": " ".join(f"{v:.4f}" for v in values),  # per seed: lets settings be paired
                    "mean": float(np.mean(values)) if values else math.nan,
                    "std": _std(values),
                    "gain": gain,
                    "gain_std": gain_std,
                    "within_noise": noisy,
                    "collapsed_seeds": sum(r.empty_layers > 0 for r in have),
                    "cut_seeds": " ".join(str(r.seed) for r in seeded if r.cut),
                    "diverged_seeds": sum(variant in r.diverged for r in have),
                    "weights_trained": _weights(have, variant, 0),
                    "weights_evaluated": _weights(have, variant, 1),
                    "experiments": " ".join(r.experiment for r in have),
                    "revs": " ".join(r.rev for r in have),
                    "precision": made_on(have, variant)[0],
                    "machines": made_on(have, variant)[1],
                }
            )
    return pd.DataFrame(rows)


def _weights(runs: Sequence[Run], variant: str, which: int) -> float:
    """Mean over seeds of the conv + linear weights a variant trained (0) or was evaluated (1) with."""
    counts = [r.weights[variant][which] for r in runs if variant in r.weights]
    return float(np.mean(counts)) if counts else math.nan


def _cell(row: pd.Series, variant: str) -> str:
    if row.n_seeds == 0:
        return "—"
    text = f"{row['mean']:.2f}" if row.n_seeds == 1 else f"{row['mean']:.2f} ± {row['std']:.2f}"
    text += f" ({row.n_seeds})"
    if row.get("diverged_seeds", 0):
        text += f" §{int(row.diverged_seeds)}"
    if variant != "baseline" and not math.isnan(row.gain):
        text += f" {row.gain:+.2f}{'~' if row.within_noise else ''}"
    return text


def _weights_line(part: pd.DataFrame, variants: Sequence[str]) -> str:
    """Conv + linear weights each variant trained with → was evaluated with (the same for every method)."""
    shown = []
    for v in variants:
        rows = part[(part.variant == v) & part.weights_trained.notna()]
        if len(rows):
            trained, evaluated = rows.weights_trained.max(), rows.weights_evaluated.max()
            shown.append(f"{v} {trained / 1e3:.1f}k → {evaluated / 1e3:.1f}k")
    return "Weights trained → evaluated (conv + linear, largest over methods): " + ", ".join(shown) + "."


def _label(rows: pd.DataFrame, method: str) -> str:
    """The paper's label, with † k/n when the mask collapsed layers in k of the n seeds."""
    label = LABELS.get(method, method)
    collapsed, seeds = int(rows.collapsed_seeds.max()), int(rows.n_seeds.max())
    label = f"{label} † {collapsed}/{seeds}" if collapsed else label
    cut = str(rows.cut_seeds.iloc[0]) if "cut_seeds" in rows and rows.cut_seeds.notna().any() else ""
    return f"{label} ✂ seed {cut}" if cut.strip() else label


METRICS = {
    "test_acc": "test accuracy at the best validation epoch",
    "final_test_acc": "test accuracy at the last epoch",
    "best_val_acc": "best validation accuracy",
}


def to_markdown(
    df: pd.DataFrame, variants: Sequence[str], methods: Sequence[str], title: str, metric: str = "test_acc"
) -> str:
    """One table per sparsity: rows in the paper's method order, a column per variant."""
    lines = [f"# {title}", ""]
    for sparsity in sorted(df.sparsity.unique()):
        part = df[df.sparsity == sparsity]
        lines += [f"## sparsity {sparsity:g}", ""]
        lines.append("| method | " + " | ".join(variants) + " |")
        lines.append("|---|" + "---|" * len(variants))
        for method in [m for m in methods if m in set(part.method)]:
            rows = part[part.method == method].set_index("variant")
            cells = [_cell(rows.loc[v], v) if v in rows.index else "—" for v in variants]
            lines.append(f"| {_label(rows, method)} | " + " | ".join(cells) + " |")
        lines += ["", _weights_line(part, variants), ""]
    lines += [
        f"Cells: {METRICS[metric]} (%), mean ± std over seeds (number of seeds), then the gain over",
        "`baseline` averaged over paired seeds. `~` marks a gain within noise: |gain| < 2 × std of the",
        "paired gains (always, with one seed). Each cell's experiments are in the CSV (`experiments`).",
    ]
    machines = sorted(
        {m for cell in df.get("machines", pd.Series(dtype=str)) for m in str(cell).split("; ") if m}
    )
    if machines:
        lines.append(f"Made on: {'; '.join(machines)} (each row's in the CSV: `precision`, `machines`).")
    if (df.collapsed_seeds > 0).any():
        lines.append(
            "† layer collapse: in k/n of the seeds the mask prunes whole layers empty; they are kept and "
            "trained (metrics/mask.json `empty_layers`)."
        )
    if df.get("cut_seeds", pd.Series(dtype=str)).fillna("").astype(str).str.strip().any():
        lines.append(
            "✂ seed k: the mask of seed k leaves no path from input to output (a layer that nothing "
            "bypasses is pruned empty), so the network's output cannot depend on its input; no variant "
            "is trained and the seed is left out of the means (its reason: metrics/experiments/)."
        )
    if (df.get("diverged_seeds", pd.Series(dtype=int)) > 0).any():
        lines.append(
            "§k: in k of the seeds the loss became non-finite and training stopped there "
            "(`train.on_divergence: stop`); their number is that of the epochs before (the best "
            "validation epoch's)."
        )
    lines.append("")
    return "\n".join(lines)


def write_outputs(df: pd.DataFrame, md: str, csv: Path, md_path: Path) -> None:
    """The long-format CSV (one row per cell × variant, with experiment names) and the markdown."""
    with atomic_path(csv) as tmp:
        df.to_csv(tmp, index=False, float_format="%.4f")
    write_text(md_path, md)


def gain_heatmap(df: pd.DataFrame, variants: Sequence[str], methods: Sequence[str], path: Path) -> None:
    """Gain of each trick over baseline, per method; one panel per sparsity, noisy cells hatched."""
    tricks = [v for v in variants if v != "baseline"]
    sparsities = sorted(df.sparsity.unique())
    if not tricks:
        raise ValueError("the heat-map needs at least one variant besides baseline in tricks.run")
    rows = [m for m in methods if m in set(df.method)]
    fig, axes = plt.subplots(
        1, len(sparsities), figsize=(1.2 * len(tricks) * len(sparsities) + 3.5, 0.5 * len(rows) + 2.2),
        squeeze=False,
    )  # fmt: skip
    gains = df[df.variant != "baseline"].gain.abs()
    lim = max(float(np.nanmax(gains)) if gains.notna().any() else 1.0, 0.1)
    image = None
    for ax, sparsity in zip(axes[0], sparsities, strict=True):
        part = df[df.sparsity == sparsity].set_index(["method", "variant"])
        grid = np.full((len(rows), len(tricks)), np.nan)
        for i, m in enumerate(rows):
            for j, v in enumerate(tricks):
                if (m, v) in part.index:
                    grid[i, j] = part.loc[(m, v), "gain"]
        image = ax.imshow(grid, cmap="RdBu", vmin=-lim, vmax=lim, aspect="auto")
        for i, m in enumerate(rows):
            for j, v in enumerate(tricks):
                if np.isnan(grid[i, j]):
                    continue
                noisy = bool(part.loc[(m, v), "within_noise"])
                color = "white" if abs(grid[i, j]) > 0.6 * lim else "black"
                label = f"{grid[i, j]:+.1f}{'~' if noisy else ''}"
                ax.text(j, i, label, ha="center", va="center", fontsize=8, color=color)
                if noisy:
                    ax.add_patch(
                        plt.Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, hatch="//", lw=0, alpha=0.35)
                    )
        ax.set_xticks(range(len(tricks)), tricks, rotation=30, ha="right")
        ax.set_yticks(range(len(rows)), [LABELS.get(m, m) for m in rows] if ax is axes[0][0] else [])
        ax.set_title(f"sparsity {sparsity:g}")
    fig.colorbar(image, ax=axes[0].tolist(), label="gain (accuracy points)")
    title = "Gain of each trick over baseline, test accuracy\n~ and hatching: within noise (|gain| < 2 std)"
    fig.suptitle(title, fontsize=10, y=1.1)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, bbox_inches="tight", format="png")
    plt.close(fig)


def sparsity_plot(df: pd.DataFrame, methods: Sequence[str], path: Path, variants: Sequence[str]) -> None:
    """Accuracy vs sparsity per method, baseline against the last of `variants` (ToST), ± std bars."""
    rows = [m for m in methods if m in set(df.method)]
    cols = min(4, len(rows))
    n_rows = math.ceil(len(rows) / cols)
    fig, axes = plt.subplots(n_rows, cols, figsize=(3.2 * cols, 2.6 * n_rows), squeeze=False, sharey=True)
    for ax, method in zip(axes.flat, rows, strict=False):
        for variant, style in zip(variants, ("o-", "s--"), strict=False):
            part = df[(df.method == method) & (df.variant == variant)].sort_values("sparsity")
            ax.errorbar(
                part.sparsity, part["mean"], yerr=part["std"].fillna(0), fmt=style, capsize=3, label=variant
            )
        ax.set_title(LABELS.get(method, method))
        ax.set_xlabel("sparsity")
        ax.grid(alpha=0.3)
    for ax in axes.flat[len(rows) :]:
        ax.axis("off")
    axes[0][0].set_ylabel("test accuracy (%)")
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)
