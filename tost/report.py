"""The result table and the accuracy-curve plot, built from the metrics files the stages wrote.

Reads the stages' full records (`publish` copies them into metrics/detail/ and metrics/curves/,
where git keeps them), whose headline subset `dvc exp show` shows, so the two always agree.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from tost.io import atomic_path, read_json, write_text
from tost.runtime import describe

if TYPE_CHECKING:
    from tost.config import Params

COLUMNS = {
    "variant": "variant",
    "method": "mask method",
    "requested_sparsity": "requested sparsity",
    "sparsity": "measured sparsity",
    "test_acc": "test acc @ best val (%)",
    "final_test_acc": "final test acc (%)",
    "best_val_acc": "best val acc (%)",
    "best_epoch": "best epoch",
    "epochs": "epochs",
    "train_seconds": "train time (s)",
    "images_per_s": "images/s",
    "weights_trained": "weights trained",
    "weights_evaluated": "weights evaluated",
    "dead_fraction": "dead activations",
}


def results_table(
    variants: Sequence[str],
    mask_metrics: Path,
    train_dir: Path,
    analysis_dir: Path,
    dense_metrics: Path | None = None,
) -> pd.DataFrame:
    """One row per variant: accuracies, sparsity (requested and measured), time, dead activations.

    With a trained dense network (`metrics/dense.json` with accuracies), its row comes first: the
    reference a sparse result is compared with.
    """
    mask = read_json(mask_metrics)
    rows: list[dict[str, Any]] = []
    dense = read_json(dense_metrics) if dense_metrics is not None else {}
    if "test_acc" in dense:
        measured = {k: dense[k] for k in COLUMNS if k in dense}
        rows.append(
            {"variant": "dense", "method": "—", "requested_sparsity": 0.0, **measured, "sparsity": 0.0}
        )
    for v in variants:
        m = read_json(train_dir / f"{v}.json")
        row = {"variant": v, "method": mask["method"], "requested_sparsity": mask["requested_sparsity"]}
        row.update({k: m[k] for k in COLUMNS if k in m})
        a_path = analysis_dir / f"{v}.json"
        if a_path.exists():
            row["dead_fraction"] = read_json(a_path)["mean_zero_fraction"]
        rows.append(row)
    return pd.DataFrame(rows, columns=[c for c in COLUMNS if any(c in r for r in rows)])


def publish(records: Path, detail: Path, curves: Path, variants: Sequence[str]) -> None:
    """Copy the stages' records (cached outs, restorable by DVC's run-cache) into git's metrics/.

    data, dense and mask records, and each variant's train and analysis record, keep their relative
    paths under `detail`; each variant's per-epoch curve goes to `curves`. A record a stage did not
    write (an analysis that was not run) is skipped, and the table leaves its column empty.
    """
    names = ["data.json", "dense.json", "mask.json"]
    names += [f"{kind}/{v}.json" for kind in ("train", "analysis") for v in variants]
    for name in names:
        if (records / name).exists():
            write_text(detail / name, (records / name).read_text())
    for v in variants:
        write_text(curves / f"{v}.csv", (records / "curves" / f"{v}.csv").read_text())


def kept_by_layer(mask_record: dict[str, Any]) -> pd.DataFrame:
    """One row per masked layer, input to output: the mask's shape, which tells the methods apart.

    `index` is the layer's depth, the x axis of the `kept weights per layer` plot (DVC's line plots
    need a number there); `layer` names it.
    """
    kept, size = mask_record["kept_per_layer"], mask_record["size_per_layer"]
    rows = [
        {"index": i, "layer": n, "kept": k, "total": size[n], "kept_fraction": k / size[n]}
        for i, (n, k) in enumerate(kept.items())
    ]
    return pd.DataFrame(rows, columns=["index", "layer", "kept", "total", "kept_fraction"])


def test_acc_by_epoch(curves: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Epoch, then each variant's test accuracy: the source of the top-level `test accuracy` plot.

    One wide file, because a DVC plot draws one line per field of a file and per revision, so every
    variant of every experiment compared by `dvc plots diff` gets its own line.
    """
    wide = pd.DataFrame({"epoch": pd.Series(dtype="int64")})
    for variant, df in curves.items():
        wide = wide.merge(
            df[["epoch", "test_acc"]].rename(columns={"test_acc": variant}), on="epoch", how="outer"
        )
    return wide.sort_values("epoch", ignore_index=True)


def dead_by_layer(variants: Sequence[str], analysis_dir: Path) -> pd.DataFrame:
    """Depth index, site name, then each variant's exactly-zero activation fraction at that site.

    Sites are listed in network order (the order the analysis found them); a site one variant lacks
    is left empty for it.
    """
    sites: dict[str, dict[str, float]] = {}
    for v in variants:
        path = analysis_dir / f"{v}.json"
        if path.exists():
            for site, stats in read_json(path)["layers"].items():
                sites.setdefault(site, {})[v] = stats["zero_fraction"]
    rows = [{"index": i, "layer": site, **by} for i, (site, by) in enumerate(sites.items())]
    return pd.DataFrame(rows, columns=["index", "layer", *variants])


def title(p: Params) -> str:
    """What the result table is of: model, data, mask, training length and seed, in one line."""
    return (
        f"{p.model.arch} (width {p.model.width}) on {p.data.name}, {p.prune.method} mask at "
        f"sparsity {p.prune.sparsity} ({p.prune.scope}), {p.train.epochs} epochs, seed {p.seed}"
    )


def notes(detail: Path, mask: Path, variants: Sequence[str]) -> list[str]:
    """The lines under the table: the splits' sizes, how to read it, layer collapse, the machines."""
    d = read_json(detail / "data.json")
    return [
        f"Data: {d['sizes']['train']} train / {d['sizes']['val']} val / {d['sizes']['test']} test images.",
        "Test accuracy is taken at the epoch of best validation accuracy; 'final' is the last epoch.",
        "Measured sparsity counts exact zeros of the trained weights over the prunable layers.",
        *collapse_note(mask),
        *machine_note([detail / "dense.json", mask, *(detail / "train" / f"{v}.json" for v in variants)]),
    ]


def collapse_note(mask_metrics: Path) -> list[str]:
    """A line for the report when the mask emptied whole layers (layer collapse), else nothing."""
    empty = read_json(mask_metrics).get("empty_layers") or []
    if not empty:
        return []
    return [
        f"Layer collapse: the mask empties {len(empty)} layer(s) ({', '.join(empty)}); they are kept and "
        "trained, and the shortcuts around them carry the signal."
    ]


def accuracies(
    variants: Sequence[str], train_dir: Path, key: str = "test_acc"
) -> dict[str, dict[str, float]]:
    """`{"acc": {variant: test accuracy}}`: one short, unique column per variant in `dvc exp show`.

    DVC names a metric by its file only where the key is ambiguous (`metrics/train/baseline.json:
    test_acc`, 36 characters), so six variants never fit a terminal; `acc.baseline` does.
    """
    return {"acc": {v: read_json(train_dir / f"{v}.json")[key] for v in variants}}


def stale_files(folders: Sequence[Path], variants: Sequence[str], known: Sequence[str]) -> list[Path]:
    """Entries in `folders` named after a variant of `known` that `variants` (tricks.run) no longer lists.

    DVC leaves the metrics of a variant whose stage is gone in the workspace, and an experiment
    would commit them beside the variants it trained; only tost's own names are touched: files
    `<variant>.<ext>` and folders `<variant>` (DVCLive's).
    """
    gone = set(known) - set(variants)
    return sorted(
        f for d in folders if d.is_dir() for f in d.iterdir() if (f.stem if f.is_file() else f.name) in gone
    )


def machine_note(records: Sequence[Path]) -> list[str]:
    """One line naming the machine(s) the records were made on (`Runtime.machine`), where they say.

    Records made before tost recorded machines have none; they are counted, not guessed.
    """
    made = [read_json(r).get("machine") for r in records if r.exists()]
    named = sorted({describe(m) for m in made if isinstance(m, dict)})
    if not named:
        return []
    unknown = sum(not isinstance(m, dict) for m in made)
    return [f"Made on: {'; '.join(named)}" + (f" ({unknown} record(s) name no machine)." if unknown else ".")]


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4f}" if abs(v) < 1 else f"{v:.2f}"
    return str(v)


def to_markdown(df: pd.DataFrame, title: str, notes: Sequence[str] = ()) -> str:
    """A GitHub-flavoured markdown table (no extra dependency), with a title and notes."""
    head = [COLUMNS.get(c, c) for c in df.columns]
    lines = [f"# {title}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in df.itertuples(index=False)]
    if notes:
        lines += ["", *notes]
    return "\n".join(lines) + "\n"


def write_results(df: pd.DataFrame, md_path: Path, csv_path: Path, title: str, notes: Sequence[str]) -> None:
    """The table as markdown (for people) and CSV (for pandas), both written atomically."""
    write_text(md_path, to_markdown(df, title, notes))
    write_text(csv_path, df.to_csv(index=False, float_format="%.6g"))


def plot_curves(curves: dict[str, pd.DataFrame], path: Path, title: str) -> None:
    """Test (solid) and validation (dashed) accuracy per epoch, one colour per variant."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for i, (variant, df) in enumerate(curves.items()):
        color = f"C{i}"
        tested = df.dropna(subset=["test_acc"])  # train.test_every_epoch: false tests some epochs only
        ax.plot(tested["epoch"], tested["test_acc"], color=color, marker=".", label=f"{variant} (test)")
        ax.plot(df["epoch"], df["val_acc"], color=color, linestyle="--", alpha=0.6, label=f"{variant} (val)")
    ax.set_xlabel("epoch")
    ax.set_ylabel("accuracy (%)")
    ax.set_title(textwrap.fill(title, 80), fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)
