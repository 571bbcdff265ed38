"""The process's runtime: its device (a GPU slot of its own under the sweep) and torch's global flags.

Process state, so glue, not library: the GPU slot this process claimed stays held until it exits.
"""

from __future__ import annotations

import os
from typing import IO

import torch

from tost.config import TrainConfig
from tost.runtime import Runtime

_HELD: list[IO[bytes]] = []  # the GPU slot this process claimed; the kernel frees it when we exit


def runtime(cfg: TrainConfig, nproc: int = 1, layout: bool = True) -> Runtime:
    """This process's runtime; first, when a sweep runs experiments in parallel, a GPU slot of its own.

    The sweep sets the lock directory (`stages._slots`); a single process that will use CUDA claims a
    slot there and keeps it until it exits. torchrun workers get their GPUs from torchrun instead.
    """
    if cfg.device != "cpu" and torch.cuda.is_available() and nproc == 1 and "LOCAL_RANK" not in os.environ:
        from stages import _slots as slots  # only the sweep's experiments pay for it

        if (asked := slots.requested(os.environ)) is not None:
            index, handle = slots.claim(asked[0], torch.cuda.device_count(), asked[1])
            _HELD.append(handle)
            torch.cuda.set_device(index)
    rt = Runtime.from_config(cfg, nproc, layout)
    set_cudnn_benchmark(cfg, rt)
    return rt


def set_cudnn_benchmark(cfg: TrainConfig, rt: Runtime) -> None:
    """`train.cudnn_benchmark` on CUDA: process-wide torch state, so it is set here, not in the library.

    The step's shapes never change (a captured graph replays them), so cuDNN's autotuning in the
    warm-up steps pays for itself; on the CPU the flag means nothing and is left alone.
    """
    if rt.device.type == "cuda":
        torch.backends.cudnn.benchmark = cfg.cudnn_benchmark
