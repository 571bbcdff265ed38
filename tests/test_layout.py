"""Guard: the CPU gradients of a training step in the Trainer's own layout equal a float64 reference.

oneDNN's 1x1 stride-2 convolution writes past its workspace in the backward-weights pass when the
input is channels-last and has fewer channels than the kernel's channel block (8 with AVX2, 16 with
AVX-512): wrong weight gradients, heap corruption or a crash (uxlfoundation/oneDNN issue 6035; see
docs/troubleshooting.md). tost's ResNet shortcuts and ghost-skip jumps are such convolutions at the
tests' widths. These tests check, for every model in the registry with and without the jumps, that
the layout the Trainer really uses on the CPU stays off that path: once with the kernels oneDNN picks
for this CPU, and once with oneDNN capped at AVX2 (`ONEDNN_MAX_CPU_ISA`), the ISA whose kernel breaks
at every width below 8, so that the guard bites on any x86-64 machine, AVX-512 ones included.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tests.conftest import ROOT, random_mask, repo_params, tiny_prepared
from tost import config
from tost.models import MODELS, build, layers
from tost.models.layers import PointwiseConv
from tost.runtime import Runtime
from tost.train import Trainer
from tost.tricks import build_variant

WIDTHS = (4, 8, 12, 16)  # the tests' (4), fashion-cpu's (8), 12 and 24 channels, the default (16)
SIZE = 16  # 16x16 images: the first strided shortcut sees 16x16 (the issue measured 0.097 error there)
TOLERANCE = 1e-4  # fp32 against float64, one batch: measured <= 4.4e-5; the bug: 0.07 to 317x


def step_errors(arch: str, width: int, variant: str) -> dict[str, float]:
    """Relative error (norm of the difference / norm of the reference) of every weight gradient.

    The step runs in the Trainer built from the repo's params (channels-last on the CPU too); the
    nets use SiLU, because at a ReLU's kink an fp32 pre-activation that rounds to the other side of
    zero moves one gradient element, which alone makes a relative error of about 5e-3.
    """
    raw = repo_params()
    raw["train"].update(device="cpu", batch_size=32)
    p = config.parse(raw)
    data = tiny_prepared(n=64, size=SIZE, seed=1)
    torch.manual_seed(0)
    net = build(arch, data.num_classes, (1, SIZE, SIZE), width, nn.SiLU)
    trainer = Trainer(
        net, random_mask(net, 0.5), data, p.data, p.train, build_variant(variant, p.tricks.options),
        Runtime.from_config(p.train), 0,
    )  # fmt: skip
    model = trainer.model.train()
    for t in trainer.tricks:
        t.on_epoch_start(0, p.train.epochs, model)  # the jumps' gate is open in the first epoch
    idx, draws = next(iter(trainer.train_loader.plan()))
    x, y = trainer.train_loader.batch(idx, draws)
    F.cross_entropy(model(x), y).backward()
    fast = {n: q.grad.clone() for n, q in model.named_parameters() if q.dim() > 1 and q.grad is not None}
    model.zero_grad(set_to_none=True)
    model.double().to(memory_format=torch.contiguous_format)
    F.cross_entropy(model(x.double().contiguous()), y).backward()
    ref = {n: q.grad for n, q in model.named_parameters() if n in fast}
    return {n: ((fast[n].double() - ref[n]).norm() / ref[n].norm().clamp_min(1e-12)).item() for n in fast}


CASES = [(a, w, v) for a in MODELS for w in WIDTHS for v in ("baseline", "ghost_skip")]


@pytest.mark.parametrize(("arch", "width", "variant"), CASES)
def test_cpu_step_gradients_match_float64(arch, width, variant):
    errors = step_errors(arch, width, variant)
    bad = {n: e for n, e in errors.items() if not e < TOLERANCE}
    assert errors and not bad, f"{arch} width {width} {variant}: wrong weight gradients {bad}"


GUARD = """
import sys
from tests.test_layout import CASES, TOLERANCE, step_errors
widths = {int(w) for w in sys.argv[1:]}
bad = []
for case in (c for c in CASES if c[1] in widths):
    errors = step_errors(*case)
    bad += [f"{case} {n}: {e:.3g}" for n, e in errors.items() if not e < TOLERANCE]
print("\\n".join(bad) or "ok")
sys.exit(1 if bad else 0)
"""


X86 = platform.machine() in ("x86_64", "AMD64")


@pytest.mark.skipif(not X86, reason="oneDNN's AVX2 kernels are x86-64's")
@pytest.mark.parametrize(("threads", "widths"), [(1, WIDTHS), (2, (4, 8))])
def test_trainer_layout_stays_off_the_broken_avx2_kernel(threads, widths):
    """The same check with oneDNN capped at AVX2 (the ISA the issue was found on): one thread died
    there with channels-last, two gave wrong gradients; in a subprocess, so a crash fails one test.
    Two threads at the widths below the AVX2 channel block and at it, where it went wrong."""
    env = {**os.environ, "ONEDNN_MAX_CPU_ISA": "AVX2", "OMP_NUM_THREADS": str(threads)}
    env["PYTHONPATH"] = str(ROOT)
    try:  # with channels-last, 2 threads hung here (and 1 thread segfaulted): a hang must fail too
        cmd = [sys.executable, "-c", GUARD, *map(str, widths)]
        out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    except subprocess.TimeoutExpired:
        pytest.fail("the guard hung for 300 s with oneDNN capped at AVX2 (a sign of the broken kernel)")
    assert out.returncode == 0 and out.stdout.strip() == "ok", (
        f"exit {out.returncode}: {out.stdout[-2000:]} {out.stderr[-2000:]}"
    )


def _plain_strided(model: nn.Module) -> nn.Module:
    """The same network with oneDNN's strided 1x1 kernel back (what tost ran before the fix)."""
    for m in model.modules():
        if isinstance(m, PointwiseConv):
            m.__class__ = nn.Conv2d
    return model


@pytest.mark.parametrize("act", [nn.ReLU, nn.SiLU])
@pytest.mark.parametrize("fmt", [torch.contiguous_format, torch.channels_last])
def test_pointwise_conv_changes_no_bit_where_the_strided_kernel_is_right(act, fmt, monkeypatch):
    """Every strided 1x1 conv sliced (the rule that keeps whole channel blocks on the strided kernel
    lifted), at width 16 where that kernel is right, at 28x28 (28 -> 14 -> 7, Fashion-MNIST's sizes):
    the output and every gradient of a training step are bit-identical to the plain strided conv's,
    so slicing moves no first-order number where the bug does not bite. (An odd size into a strided
    conv, 9x9, takes another reduction order for the weight gradient: 2e-5 apart, measured.)"""
    monkeypatch.setattr(layers, "channel_block", lambda: 10**9)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(32, 1, 28, 28, generator=g).contiguous(memory_format=fmt)
    y = torch.randint(0, 10, (32,), generator=g)
    runs = []
    for plain in (False, True):
        torch.manual_seed(0)
        net = build("resnet20", 10, (1, 28, 28), 16, act)
        net = (_plain_strided(net) if plain else net).to(memory_format=fmt)
        out = net(x)
        F.cross_entropy(out, y).backward()
        runs.append([out.detach(), *(q.grad for q in net.parameters())])
    assert sum(isinstance(m, PointwiseConv) for m in build("resnet20", 10, (1, 28, 28), 16).modules()) == 2
    assert all(torch.equal(a, b) for a, b in zip(*runs, strict=True))
