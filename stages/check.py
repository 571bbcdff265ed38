"""DVC stage `check`: validate params.yaml before any other stage runs.

DVC deletes a stage's outputs before running its command, so a stage that found bad params only
when it started would already have lost its previous artifacts. This gate runs first (every stage
depends on it through `data`), and its output is the same for every valid params.yaml, so passing
it never forces a downstream stage to rerun. With `--variants DIR` it also writes, per variant of
`tricks.run`, the options of the tricks that variant trains with: what its `train@` stage depends
on, instead of the whole `tricks` section.
"""

import argparse
from pathlib import Path

from stages._common import PARAMS, run_stage
from tost import __version__, config, tricks
from tost.errors import ConfigError
from tost.io import atomic_dir, write_json

# A failed `dvc exp run -S key=value` leaves the value in params.yaml, and DVC leaves git's index with
# the file's new timestamp, so `git status` may not show it and `git checkout params.yaml` does nothing
# (docs/troubleshooting.md): the touch makes git look again.
UNDO = (
    "a failed `dvc exp run -S` leaves its value in params.yaml, where `git status` may not show it: "
    "`touch params.yaml && git checkout params.yaml` restores HEAD's, `dvc exp apply NAME` an experiment's"
)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--variants", type=Path, help="a file per variant: the trick options it trains with")
    args = ap.parse_args(argv)
    try:
        p = config.load(PARAMS)
    except ConfigError as err:
        raise ConfigError(f"{err}; {UNDO}") from None
    if args.variants is not None:
        with atomic_dir(args.variants) as folder:
            for variant in p.tricks.run:
                write_json(folder / f"{variant}.json", tricks.used_options(variant, p.tricks.options))
    write_json(args.out, {"params": "valid", "tost": __version__})


if __name__ == "__main__":
    run_stage(main, threads=False)
