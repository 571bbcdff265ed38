"""Where a number is made: the CPU's precision that fits it, and the machine every record names."""

from __future__ import annotations

import dataclasses
import logging
import platform
from pathlib import Path

import pytest
import torch

from stages._common import set_threads
from tests.conftest import params
from tost import cpu
from tost.cpu import onednn_channel_block
from tost.runtime import Runtime, cpu_bf16, cpu_flags, cpu_name, describe, has_bf16_units

SAPPHIRE = "model name\t: Intel(R) Xeon(R) Platinum 8480+\nflags\t\t: fpu avx2 avx512f amx_bf16 amx_tile\n"
ZEN3 = "processor\t: 0\nmodel name\t: AMD EPYC 7B13\nflags\t\t: fpu sse avx avx2 fma\n"
ZEN4 = "model name\t: AMD EPYC 9B14\nflags\t\t: avx2 avx512f avx512_bf16 avx512_vnni\n"
GRAVITON = "processor\t: 0\nBogoMIPS\t: 2100.00\nFeatures\t: fp asimd sve bf16 i8mm\n"


def test_cpuinfo_is_read_for_the_model_and_its_flags():
    assert cpu_name(SAPPHIRE) == "Intel(R) Xeon(R) Platinum 8480+"
    assert cpu_flags(ZEN3) == {"fpu", "sse", "avx", "avx2", "fma"}
    assert "bf16" in cpu_flags(GRAVITON) and cpu_name(GRAVITON)  # no model name: what Python knows


@pytest.mark.parametrize(
    ("text", "units"), [(SAPPHIRE, True), (ZEN4, True), (ZEN3, False), (GRAVITON, False), ("", False)]
)
def test_bf16_units_are_amx_bf16_or_avx512_bf16(text, units):
    assert has_bf16_units(cpu_flags(text)) is units


def test_cpu_amp_auto_takes_bf16_only_with_bf16_units(caplog):
    cfg = dataclasses.replace(params().train, device="cpu", cpu_amp="auto")
    with caplog.at_level(logging.WARNING):
        assert Runtime.from_config(cfg, flags=cpu_flags(SAPPHIRE)).amp_dtype is torch.bfloat16
        assert Runtime.from_config(cfg, flags=cpu_flags(ZEN3)).amp_dtype is None
        assert (
            Runtime.from_config(dataclasses.replace(cfg, cpu_amp=False), flags={"amx_bf16"}).amp_dtype is None
        )
    assert not caplog.records  # auto and false never warn


def test_cpu_amp_true_without_bf16_units_runs_bf16_and_warns_once_with_its_cost(caplog):
    with caplog.at_level(logging.WARNING):
        assert cpu_bf16(True, cpu_flags(ZEN3)) is True
    (record,) = caplog.records
    assert "without bf16 units" in record.message and "11-14x slower" in record.message
    assert "auto" in record.message
    caplog.clear()
    assert cpu_bf16(True, cpu_flags(ZEN4)) is True and not caplog.records


def test_cpu_amp_auto_is_a_valid_param_and_other_strings_are_not():
    assert params(**{"train.cpu_amp": "auto"}).train.cpu_amp == "auto"
    with pytest.raises(Exception, match=r"train\.cpu_amp"):
        params(**{"train.cpu_amp": "fast"})


def test_the_machine_record_is_true_for_this_process():
    m = Runtime.from_config(dataclasses.replace(params().train, device="cpu")).machine()
    assert set(m) == {"cpu", "cpu_capability", "threads", "torch", "device", "precision", "compiled"}
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists() and "model name" in cpuinfo.read_text():
        line = next(ln for ln in cpuinfo.read_text().splitlines() if ln.startswith("model name"))
        assert m["cpu"] == line.split(":", 1)[1].strip()
    else:
        assert m["cpu"] == (platform.processor() or platform.machine() or "unknown")
    assert m["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert m["threads"] == torch.get_num_threads() and m["torch"] == torch.__version__
    assert (m["device"], m["precision"], m["compiled"]) == ("cpu", "fp32", False)
    bf16 = Runtime.from_config(dataclasses.replace(params().train, device="cpu", cpu_amp=True, compile=True))
    assert (bf16.machine()["precision"], bf16.machine()["compiled"]) == ("bf16", True)
    assert describe(m).startswith(f"{m['cpu']} ({m['cpu_capability']}), {m['threads']} thread")


def test_train_threads_wins_over_omp_num_threads_and_says_so(caplog):
    before = torch.get_num_threads()
    try:
        with caplog.at_level(logging.INFO):
            set_threads(1, "2")
            assert torch.get_num_threads() == 1
            set_threads(1, "1")
            set_threads(1, None)
        assert [r.message for r in caplog.records] == ["train.threads=1 wins over OMP_NUM_THREADS=2"]
    finally:
        torch.set_num_threads(before)


def test_threads_is_a_bounded_param():
    assert params(**{"train.threads": 4}).train.threads == 4
    for bad in (0, 2000):
        with pytest.raises(Exception, match=r"train\.threads must be in \[1, 1024\]"):
            params(**{"train.threads": bad})


def test_an_unreadable_cpuinfo_names_what_python_knows(monkeypatch, tmp_path):
    monkeypatch.setattr(cpu, "CPUINFO", tmp_path / "missing")
    assert cpu_flags() == frozenset() and cpu_name() == (
        platform.processor() or platform.machine() or "unknown"
    )


def test_onednn_channel_block_follows_the_isa_and_its_cap():
    """8 for AVX2 kernels, 16 for AVX-512 ones; 16 (the side that slices more) when unknown."""
    assert onednn_channel_block(cpu_flags(ZEN3), env={}) == 8
    assert onednn_channel_block(cpu_flags(ZEN4), env={}) == 16
    assert onednn_channel_block(cpu_flags(SAPPHIRE), env={}) == 16
    assert onednn_channel_block(cpu_flags(GRAVITON), env={}) == 16 and onednn_channel_block((), env={}) == 16
    assert onednn_channel_block(cpu_flags(SAPPHIRE), env={"ONEDNN_MAX_CPU_ISA": "AVX2"}) == 8
    assert onednn_channel_block(cpu_flags(SAPPHIRE), env={"DNNL_MAX_CPU_ISA": "avx512_core_bf16"}) == 16
    assert onednn_channel_block(cpu_flags(ZEN3), env={"ONEDNN_MAX_CPU_ISA": "ALL"}) == 8
