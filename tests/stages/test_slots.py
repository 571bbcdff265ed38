"""GPU slots: exclusive, freed with their holder, N per GPU, claimed by the stage glue (not the library)."""

from __future__ import annotations

import dataclasses
import signal
import subprocess
import sys

import torch

from stages import _device
from stages import _slots as slots
from tests.conftest import ROOT
from tost import config


def test_slots_are_exclusive_and_freed_with_their_holder(tmp_path):
    first, h0 = slots.claim(tmp_path, 2)
    second, h1 = slots.claim(tmp_path, 2)
    assert (first, second) == (0, 1)
    h0.close()  # the process holding GPU 0 ended
    third, h2 = slots.claim(tmp_path, 2)
    assert third == 0
    h1.close()
    h2.close()


def test_a_slot_held_by_a_sigkilled_process_is_free_again(tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from stages import _slots; "
         "gpu, held = _slots.claim(sys.argv[1], 2); print(gpu, flush=True); time.sleep(300)", str(tmp_path)],
        cwd=ROOT, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "0"  # the other process holds GPU 0
        gpu, h1 = slots.claim(tmp_path, 2)
        assert gpu == 1
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
        gpu, h0 = slots.claim(tmp_path, 2, poll_s=0.01)
        assert gpu == 0  # the kernel dropped the dead process's lock
        h0.close()
        h1.close()
    finally:
        holder.kill()
        holder.wait()


def test_several_slots_per_gpu_spread_over_the_gpus_first(tmp_path):
    held = [slots.claim(tmp_path, 2, per_gpu=2) for _ in range(4)]
    assert [gpu for gpu, _ in held] == [0, 1, 0, 1]
    held[1][1].close()
    again, handle = slots.claim(tmp_path, 2, per_gpu=2)
    assert again == 1
    for _, h in [*held, (again, handle)]:
        h.close()


def test_stage_glue_claims_a_gpu_of_its_own_in_a_parallel_sweep(tmp_path, monkeypatch, raw_params):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    chosen = []
    monkeypatch.setattr(torch.cuda, "set_device", chosen.append)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: chosen[-1])
    monkeypatch.setenv(slots.LOCK_DIR, str(tmp_path))
    monkeypatch.setenv(slots.PER_GPU, "1")
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    monkeypatch.setattr(_device, "_HELD", [])
    cfg = dataclasses.replace(config.parse(raw_params).train, device="cuda")
    first, second = _device.runtime(cfg), _device.runtime(cfg)
    assert (first.device.index, second.device.index) == (0, 1)
    _device._HELD[0].close()  # the first experiment ended
    assert _device.runtime(cfg).device.index == 0


def test_without_a_sweep_nothing_is_claimed(tmp_path):
    assert slots.requested({}) is None
    assert slots.requested({slots.LOCK_DIR: str(tmp_path), slots.PER_GPU: "4"}) == (str(tmp_path), 4)
