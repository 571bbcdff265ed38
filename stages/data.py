"""DVC stage `data`: dataset → prepared uint8 train/val/test tensors + metrics/data.json."""

import argparse
import logging
from pathlib import Path

from stages._common import PARAMS, run_stage
from tost import config, data, metrics
from tost.datasets import split

log = logging.getLogger("stages.data")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--metrics", type=Path, required=True)
    ap.add_argument("--detail", type=Path, required=True)
    args = ap.parse_args(argv)
    p = config.load(PARAMS)
    d = p.data
    prepared = split.prepare(d, p.seed)
    meta = data.save_prepared(prepared, args.out)
    metrics.write({"dataset": d.name, **meta}, metrics.DATA, args.metrics, args.detail)
    log.info("data: %s train/val/test = %s", d.name, meta.get("sizes"))


if __name__ == "__main__":
    run_stage(main)
