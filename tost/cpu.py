"""What the CPU is: its model and feature flags, as the system reports them (Linux: /proc/cpuinfo).

Its own module, imported by the models (oneDNN's channel blocks) and the runtime (bf16 units,
provenance), because both must know it and the models may not import the runtime.
"""

from __future__ import annotations

import os
import platform
from collections.abc import Iterable, Mapping
from pathlib import Path

# x86 CPU flags (as /proc/cpuinfo spells them) of bf16 units: with them bf16 autocast was about 2x
# fp32 for ResNet-20 (AMX, benchmarks/RESULTS.md); without them 11-14x slower (a Zen 3 EPYC).
BF16_UNITS = ("amx_bf16", "avx512_bf16")
CPUINFO = Path("/proc/cpuinfo")


def _cpuinfo_field(name: str, cpuinfo: str | None) -> str | None:
    """The first `name : value` line of /proc/cpuinfo (or of `cpuinfo`); None where there is none."""
    if cpuinfo is None:
        try:
            cpuinfo = CPUINFO.read_text(encoding="utf-8", errors="replace")
        except OSError:  # not Linux
            return None
    for line in cpuinfo.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() == name:
            return value.strip()
    return None


def cpu_flags(cpuinfo: str | None = None) -> frozenset[str]:
    """This CPU's feature flags (x86 `flags`, Arm `Features`); empty where the system does not say."""
    value = _cpuinfo_field("flags", cpuinfo) or _cpuinfo_field("Features", cpuinfo) or ""
    return frozenset(value.split())


def cpu_name(cpuinfo: str | None = None) -> str:
    """The CPU model as the system names it (x86 `model name`), else what Python knows."""
    return _cpuinfo_field("model name", cpuinfo) or platform.processor() or platform.machine() or "unknown"


def onednn_channel_block(flags: Iterable[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    """Input channels per block of the oneDNN x86 kernels that compute 1x1 convolutions here.

    16 with AVX-512, 8 with AVX2 or older: what the CPU has (`avx512f`, `avx2`), unless oneDNN is
    capped (ONEDNN_MAX_CPU_ISA, as tests do). 16 where it cannot be told: that is the side that
    slices more strided convs, which is always correct (tost.models.layers).
    """
    env = os.environ if env is None else env
    cap = (env.get("ONEDNN_MAX_CPU_ISA") or env.get("DNNL_MAX_CPU_ISA") or "").upper()
    if cap and cap != "ALL":
        return 16 if cap.startswith(("AVX512", "AVX10")) else 8
    flags = cpu_flags() if flags is None else frozenset(flags)
    return 8 if "avx2" in flags and "avx512f" not in flags else 16
