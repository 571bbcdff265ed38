"""One GPU per parallel experiment, without telling DVC's queue workers anything.

`dvc queue start -j N` starts N identical workers: there is no per-worker environment in which to put
a different CUDA_VISIBLE_DEVICES. Instead every training process claims a GPU for itself: it takes an
exclusive `flock` on one lock file per GPU in a shared directory (`TOST_GPU_LOCK_DIR`, set by the
table command), the first that nobody holds. The lock lasts exactly as long as the process (the
kernel drops it when the process dies, even on SIGKILL), so no slot is ever leaked. With more
processes than GPUs the surplus waits for a GPU to come free rather than sharing one.
"""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path
from typing import IO


def claim(lock_dir: str | os.PathLike[str], count: int, poll_s: float = 2.0) -> tuple[int, IO[bytes]]:
    """Index of a GPU this process now holds alone, and the open lock file that holds it.

    The caller keeps the file object alive for as long as it uses the GPU; closing it frees the slot.
    """
    if count < 1:
        raise ValueError(f"count must be >= 1, got {count}")
    root = Path(lock_dir)
    root.mkdir(parents=True, exist_ok=True)
    while True:
        for index in range(count):
            handle = open(root / f"gpu{index}.lock", "wb")  # noqa: SIM115 - the lock lives with the handle
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.close()
                continue
            return index, handle
        time.sleep(poll_s)
