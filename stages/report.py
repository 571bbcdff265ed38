"""DVC stage `report`: metrics/results.{md,csv}, the accuracy curves, and the sources of two DVC plots.

It reads the full records under metrics/detail/ (the headline metrics files hold a subset) and writes
the wide CSVs the top-level plots in dvc.yaml draw: test accuracy by epoch and dead activations per
layer, one column per variant.
"""

import argparse
from pathlib import Path

import pandas as pd

from stages._common import PARAMS, run_stage
from tost import config, report
from tost.io import read_json, write_text


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    for name in ("mask_metrics", "data_metrics", "dense_metrics", "train_dir", "curves_dir", "analysis_dir",
                 "md", "csv", "plot", "acc_by_epoch", "dead_by_layer"):  # fmt: skip
        ap.add_argument(f"--{name.replace('_', '-')}", dest=name, type=Path, required=True)
    args = ap.parse_args(argv)
    p = config.load(PARAMS)
    variants = list(p.tricks.run)
    df = report.results_table(
        variants, args.mask_metrics, args.train_dir, args.analysis_dir, args.dense_metrics
    )
    d = read_json(args.data_metrics)
    title = (
        f"{p.model.arch} (width {p.model.width}) on {p.data.name}, {p.prune.method} mask at "
        f"sparsity {p.prune.sparsity} ({p.prune.scope}), {p.train.epochs} epochs, seed {p.seed}"
    )
    notes = [
        f"Data: {d['sizes']['train']} train / {d['sizes']['val']} val / {d['sizes']['test']} test images.",
        "Test accuracy is taken at the epoch of best validation accuracy; 'final' is the last epoch.",
        "Measured sparsity counts exact zeros of the trained weights over the prunable layers.",
        *report.collapse_note(args.mask_metrics),
    ]
    report.write_results(df, args.md, args.csv, title, notes)
    curves = {v: pd.read_csv(args.curves_dir / f"{v}.csv") for v in variants}
    report.plot_curves(curves, args.plot, title)
    write_text(args.acc_by_epoch, report.test_acc_by_epoch(curves).to_csv(index=False))
    write_text(args.dead_by_layer, report.dead_by_layer(variants, args.analysis_dir).to_csv(index=False))
    print(report.to_markdown(df, title))


if __name__ == "__main__":
    run_stage(main)
