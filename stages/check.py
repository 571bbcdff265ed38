"""DVC stage `check`: validate params.yaml before any other stage runs.

DVC deletes a stage's outputs before running its command, so a stage that found bad params only
when it started would already have lost its previous artifacts. This gate runs first (every stage
depends on it through `data`), and its output is the same for every valid params.yaml, so passing
it never forces a downstream stage to rerun.
"""

import argparse
from pathlib import Path

from stages._common import PARAMS, run_stage
from tost import __version__, config
from tost.io import write_json


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    config.load(PARAMS)
    write_json(args.out, {"params": "valid", "tost": __version__})


if __name__ == "__main__":
    run_stage(main)
