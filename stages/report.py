"""DVC stage `report`: the result table, the accuracy curves, the records in git, the plots' data.

The stages keep their full records as cached outs under artifacts/records/ (so DVC's run-cache can
restore them); this stage, which is cheap and never run-cached, copies them into git as
metrics/detail/ and metrics/curves/, builds metrics/results.{md,csv} from them, and writes the wide
CSVs the top-level plots in dvc.yaml draw (one column per variant, or one row per layer).
"""

import argparse
import shutil
from pathlib import Path

import pandas as pd

from stages._common import PARAMS, run_stage
from tost import config, report, tricks
from tost.io import read_json, write_json, write_text


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    for name in ("records", "detail", "curves", "md", "csv", "plot", "acc_by_epoch", "dead_by_layer",
                 "kept_by_layer"):  # fmt: skip
        ap.add_argument(f"--{name.replace('_', '-')}", dest=name, type=Path, required=True)
    ap.add_argument("--stale", type=Path, nargs="*", default=[], help="folders of per-variant metrics")
    ap.add_argument("--accuracy", type=Path, help="each variant's test accuracy, one short key each")
    args = ap.parse_args(argv)
    p = config.load(PARAMS)
    variants = list(p.tricks.run)
    for f in report.stale_files(args.stale, variants, list(tricks.VARIANTS)):  # variants no longer
        shutil.rmtree(f) if f.is_dir() else f.unlink()  # trained: not left in (or put into) a commit
    report.publish(args.records, args.detail, args.curves, variants)
    mask = args.detail / "mask.json"
    df = report.results_table(
        variants, mask, args.detail / "train", args.detail / "analysis", args.detail / "dense.json"
    )
    title, notes = report.title(p), report.notes(args.detail, mask, variants)
    report.write_results(df, args.md, args.csv, title, notes)
    if args.accuracy is not None:
        write_json(args.accuracy, report.accuracies(variants, args.detail / "train"))
    curves = {v: pd.read_csv(args.curves / f"{v}.csv") for v in variants}
    report.plot_curves(curves, args.plot, title)
    write_text(args.acc_by_epoch, report.test_acc_by_epoch(curves).to_csv(index=False))
    write_text(
        args.dead_by_layer, report.dead_by_layer(variants, args.detail / "analysis").to_csv(index=False)
    )
    write_text(args.kept_by_layer, report.kept_by_layer(read_json(mask)).to_csv(index=False))
    print(report.to_markdown(df, title))


if __name__ == "__main__":
    run_stage(main)
