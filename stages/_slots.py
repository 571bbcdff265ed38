"""GPU slots for parallel experiments, claimed by each training process without telling DVC anything.

`dvc queue start -j N` starts N identical workers: there is no per-worker environment in which to put
a different CUDA_VISIBLE_DEVICES. Instead every training process claims a slot for itself: it takes an
exclusive `flock` on one lock file per slot in a shared directory (`TOST_GPU_LOCK_DIR`, set by the
sweep), the first that nobody holds. Each GPU has `TOST_PER_GPU` slots (`report.per_gpu`): small
models leave most of a GPU idle, so several experiments can share one. Slots are taken GPU by GPU
round-robin, so that experiments spread over the GPUs before they double up. A lock lasts exactly as
long as its process (the kernel drops it when the process dies, even on SIGKILL), so no slot is ever
leaked; with more processes than slots the surplus waits for one to come free.
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import IO

LOCK_DIR = "TOST_GPU_LOCK_DIR"
PER_GPU = "TOST_PER_GPU"


def claim(
    lock_dir: str | os.PathLike[str], gpus: int, per_gpu: int = 1, poll_s: float = 2.0
) -> tuple[int, IO[bytes]]:
    """Index of a GPU on which this process now holds a slot, and the open lock file that holds it.

    The caller keeps the file object alive for as long as it uses the GPU; closing it frees the slot.
    """
    if gpus < 1 or per_gpu < 1:
        raise ValueError(f"gpus and per_gpu must be >= 1, got {gpus} and {per_gpu}")
    root = Path(lock_dir)
    root.mkdir(parents=True, exist_ok=True)
    while True:
        for slot in range(per_gpu):
            for gpu in range(gpus):
                handle = open(root / f"gpu{gpu}-slot{slot}.lock", "wb")  # noqa: SIM115 - lives with the lock
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    handle.close()
                    continue
                return gpu, handle
        time.sleep(poll_s)


def requested(environ: Mapping[str, str]) -> tuple[str, int] | None:
    """(lock directory, slots per GPU) when a sweep asked its experiments to claim slots, else None."""
    lock_dir = environ.get(LOCK_DIR)
    if not lock_dir:
        return None
    return lock_dir, max(1, int(environ.get(PER_GPU, "1")))
