"""Where and how tensors run (device, autocast dtype, memory format, compile), seeding, RNG state.

One `Runtime` value is passed explicitly (no module-global platform), and CPU and CUDA take the same
code path: the device is a parameter, autocast is a no-op context on the CPU.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from tost.config import TrainConfig
from tost.cpu import BF16_UNITS, cpu_flags, cpu_name
from tost.errors import TrainingError

log = logging.getLogger(__name__)


def has_bf16_units(flags: Iterable[str]) -> bool:
    """Whether the CPU has bf16 units (AMX-BF16 or AVX512-BF16), where bf16 autocast pays."""
    return not set(BF16_UNITS).isdisjoint(flags)


def cpu_bf16(setting: bool | str, flags: Iterable[str]) -> bool:
    """`train.cpu_amp` resolved for this CPU: `auto` is bf16 only with bf16 units.

    `true` without them is honoured (the user asked for bf16), with one warning line of its cost.
    """
    units = has_bf16_units(flags)
    if setting is True and not units:
        log.warning(
            "train.cpu_amp=true on a CPU without bf16 units (%s): bf16 autocast was 11-14x slower than "
            "fp32 on such a CPU (ResNet-20 w16, a Zen 3 EPYC); train.cpu_amp: auto takes fp32 here",
            "/".join(BF16_UNITS),
        )
    return units if setting == "auto" else bool(setting)


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
    def from_config(
        cls, cfg: TrainConfig, nproc: int = 1, layout: bool = True, flags: Iterable[str] | None = None
    ) -> Runtime:
        """Resolve `train.device` (auto → CUDA when present) and the autocast dtype.

        bf16 autocast: on CUDA with `train.amp`; on the CPU only with `train.cpu_amp` (`auto`: where
        the CPU has bf16 units, `flags` or this CPU's), because there it changes results and pays
        only with those units, while fp32 CPU runs stay bit-reproducible. `layout=False` keeps the
        default memory format and no compile (analysis).

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
        bf16 = cfg.amp if use_cuda else cpu_bf16(cfg.cpu_amp, cpu_flags() if flags is None else flags)
        return cls(
            device=dev,
            amp_dtype=torch.bfloat16 if bf16 else None,
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

    def machine(self) -> dict[str, Any]:
        """Where this process's numbers are made: what moves fp32 bits, so part of every record.

        The CPU model and torch's CPU capability (the kernels' ISA), the threads torch computes with,
        torch's version, the device (the GPU's name where one is used), the precision that ran, and
        whether the model was compiled.
        """
        gpu = torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else None
        return {
            "cpu": cpu_name(),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "device": gpu or "cpu",
            "precision": "bf16" if self.amp_dtype is not None else "fp32",
            "compiled": self.compile,
        }


def describe(machine: Mapping[str, Any]) -> str:
    """One line for a `Runtime.machine` record: CPU (capability), threads, torch, device, precision."""
    threads = int(machine.get("threads", 0))
    return (
        f"{machine.get('cpu', '?')} ({machine.get('cpu_capability', '?')}), "
        f"{threads} thread{'s' if threads != 1 else ''}, torch {machine.get('torch', '?')}, "
        f"{machine.get('device', '?')}, {machine.get('precision', '?')}, "
        f"{'compiled' if machine.get('compiled') else 'eager'}"
    )


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
