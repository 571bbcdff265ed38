"""Where and how tensors run: device, autocast dtype, memory format, compile; and seeding.

One `Runtime` value is passed explicitly (no module-global platform), and CPU and CUDA take the same
code path: the device is a parameter, autocast is a no-op context on the CPU.
"""

from __future__ import annotations

import contextlib
import os
import random
from dataclasses import dataclass, field
from typing import IO

import numpy as np
import torch

from tost import gpu_slots
from tost.errors import TrainingError


@dataclass(frozen=True)
class Runtime:
    """The execution settings of one process."""

    device: torch.device
    amp_dtype: torch.dtype | None
    channels_last: bool
    compile: bool
    rank: int = 0  # this process's rank when several train together (tost.distributed), else 0
    world_size: int = 1
    # Held for the process's lifetime when it claimed a GPU of its own (tost.gpu_slots).
    gpu_lock: IO[bytes] | None = field(default=None, repr=False, compare=False)

    @classmethod
    def detect(
        cls, device: str, amp: bool, channels_last: bool, compile: bool, nproc: int = 1, cpu_amp: bool = False
    ) -> Runtime:
        """Resolve `train.device` (auto → CUDA when present) and the autocast dtype.

        bf16 autocast: on CUDA with `amp`; on the CPU only with `cpu_amp`, because there it changes
        results and pays only on CPUs with bf16 units, while fp32 CPU runs stay bit-reproducible.

        `nproc` processes on CUDA need a GPU each; asking for more is refused here, before torchrun
        starts anything, whether CUDA was asked for or chosen by `auto`.
        """
        if device == "cuda" and not torch.cuda.is_available():
            raise TrainingError("train.device=cuda but no CUDA GPU is visible; use train.device=auto or cpu")
        use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
        if use_cuda and nproc > (gpus := torch.cuda.device_count()):
            how = "train.device=cuda" if device == "cuda" else "train.device=auto chose CUDA"
            raise TrainingError(
                f"train.nproc={nproc} but only {gpus} CUDA GPU(s) are visible ({how}); "
                f"set train.nproc <= {gpus}, or train.device=cpu to run {nproc} processes on the CPU"
            )
        lock = None
        lock_dir = os.environ.get("TOST_GPU_LOCK_DIR")
        if (
            use_cuda
            and nproc == 1
            and lock_dir
            and "LOCAL_RANK" not in os.environ
            and torch.cuda.device_count() > 1
        ):
            index, lock = gpu_slots.claim(lock_dir, torch.cuda.device_count())  # parallel sweep: a GPU each
            torch.cuda.set_device(index)
        dev = torch.device("cuda", torch.cuda.current_device()) if use_cuda else torch.device("cpu")
        return cls(
            device=dev,
            amp_dtype=torch.bfloat16 if (amp if use_cuda else cpu_amp) else None,
            channels_last=channels_last,
            compile=compile,
            gpu_lock=lock,
        )

    @classmethod
    def cpu(cls) -> Runtime:
        """Plain fp32 CPU execution (tests, analysis)."""
        return cls(torch.device("cpu"), None, False, False)

    def autocast(self) -> contextlib.AbstractContextManager:
        """bf16 autocast on CUDA (no loss scaling needed), nothing elsewhere."""
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    @property
    def memory_format(self) -> torch.memory_format:
        return torch.channels_last if self.channels_last else torch.contiguous_format


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices); data order uses its own seeded generator."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
