"""Where and how tensors run (device, autocast dtype, memory format, compile), seeding, RNG state.

One `Runtime` value is passed explicitly (no module-global platform), and CPU and CUDA take the same
code path: the device is a parameter, autocast is a no-op context on the CPU.
"""

from __future__ import annotations

import contextlib
import os
import random
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from tost.config import TrainConfig
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
    cuda_graphs: bool = False  # capture the training step as a CUDA graph (tost.step); CUDA only

    @classmethod
    def from_config(cls, cfg: TrainConfig, nproc: int = 1, layout: bool = True) -> Runtime:
        """Resolve `train.device` (auto → CUDA when present) and the autocast dtype.

        bf16 autocast: on CUDA with `train.amp`; on the CPU only with `train.cpu_amp`, because there
        it changes results and pays only on CPUs with bf16 units, while fp32 CPU runs stay
        bit-reproducible. `layout=False` keeps the default memory format and no compile (analysis).

        `nproc` processes on CUDA need a GPU each; asking for more is refused here, before torchrun
        starts anything, whether CUDA was asked for or chosen by `auto`.
        """
        device = cfg.device
        if device == "cuda" and not torch.cuda.is_available():
            raise TrainingError("train.device=cuda but no CUDA GPU is visible; use train.device=auto or cpu")
        use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
        if use_cuda and nproc > (gpus := torch.cuda.device_count()):
            how = "train.device=cuda" if device == "cuda" else "train.device=auto chose CUDA"
            raise TrainingError(
                f"train.nproc={nproc} but only {gpus} CUDA GPU(s) are visible ({how}); "
                f"set train.nproc <= {gpus}, or train.device=cpu to run {nproc} processes on the CPU"
            )
        dev = torch.device("cuda", torch.cuda.current_device()) if use_cuda else torch.device("cpu")
        return cls(
            device=dev,
            amp_dtype=torch.bfloat16 if (cfg.amp if use_cuda else cfg.cpu_amp) else None,
            channels_last=cfg.channels_last and layout,
            compile=cfg.compile and layout,
            cuda_graphs=use_cuda and cfg.cuda_graphs and layout,
        )

    @classmethod
    def cpu(cls) -> Runtime:
        """Plain fp32 CPU execution (tests)."""
        return cls(torch.device("cpu"), None, False, False)

    def autocast(self) -> contextlib.AbstractContextManager:
        """bf16 autocast on CUDA (no loss scaling needed), nothing elsewhere.

        Without autocast's weight-cast cache, which a CUDA graph capture must not use; a step casts
        each weight once either way, so nothing is lost.
        """
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype, cache_enabled=False)

    @property
    def memory_format(self) -> torch.memory_format:
        return torch.channels_last if self.channels_last else torch.contiguous_format


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices); data order uses its own seeded generator."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")


def rng_state() -> dict[str, Any]:
    """Python, NumPy, torch (and CUDA) generator states as tensors, so `weights_only` loads them."""
    version, mt, gauss = random.getstate()
    _, np_mt, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    state: dict[str, Any] = {
        "python": (version, torch.tensor(mt, dtype=torch.int64), gauss),
        "numpy": (torch.from_numpy(np_mt.astype(np.int64)), int(np_pos), int(np_has_gauss), float(np_gauss)),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what `rng_state` captured."""
    version, mt, gauss = state["python"]
    random.setstate((version, tuple(int(v) for v in mt.tolist()), gauss))
    np_mt, np_pos, np_has_gauss, np_gauss = state["numpy"]
    np.random.set_state(("MT19937", np_mt.numpy().astype(np.uint32), np_pos, np_has_gauss, np_gauss))
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
