"""What every stage shares: logging, the one-line error for user mistakes, and the process's runtime.

This is glue, not library: `stages._device` holds process state (the GPU slot lock), which the
library never does; `stages._torchrun` starts processes.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path

import torch

from tost import config
from tost.errors import TostError

PARAMS = Path("params.yaml")


def run_stage(main: Callable[[], None], threads: bool = True) -> None:
    """Run a stage; a `TostError` becomes one `error: ...` line on stderr and exit code 2.

    First the process takes `train.threads` CPU threads, so that every command that runs a stage
    (`dvc repro`, `dvc exp run`, the sweep's queue and SLURM jobs) computes with the same number;
    `threads=False` for commands that compute nothing (the params check, the sweep itself).
    """
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout, force=True)
    try:
        if threads:
            set_threads(config.load(PARAMS).train.threads, os.environ.get("OMP_NUM_THREADS"))
        main()
    except TostError as err:
        print(f"error: {err}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        print("error: interrupted; finished epochs are kept, rerun to resume", file=sys.stderr, flush=True)
        raise SystemExit(130) from None


def set_threads(threads: int, env: str | None) -> None:
    """Compute with `threads` CPU threads; say so when OMP_NUM_THREADS asked for another number.

    The thread count moves fp32 bits on the CPU, so it is a param (part of each stage's identity),
    never what the environment of the command happens to say.
    """
    if env is not None and env.strip() != str(threads):
        logging.getLogger("tost").info("train.threads=%d wins over OMP_NUM_THREADS=%s", threads, env)
    torch.set_num_threads(threads)


def data_files(folder: Path) -> list[Path]:
    """The prepared data's files, in a fixed order: part of every run identity that reads them."""
    return sorted(f for f in folder.iterdir() if f.is_file())
