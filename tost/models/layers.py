"""Layers the models and tricks share.

`PointwiseConv` exists because of an open oneDNN bug (uxlfoundation/oneDNN issue 6035): the CPU
kernel of a strided 1×1 convolution's weight gradient first copies every stride-th pixel into a
workspace ("reduce to unit stride") and, for channels-last input with fewer input channels than its
channel block (8 with AVX2, 16 with AVX-512), writes past that workspace: wrong weight gradients,
heap corruption, crashes or hangs (docs/troubleshooting.md). Taking every stride-th pixel ourselves
and running a unit-stride 1×1 convolution is the same arithmetic, and oneDNN then never takes that
path: where the strided kernel was right, the first-order results are bit-identical (forward, input
and weight gradients, AVX2 and AVX-512, even image sizes), so channels-last keeps its CPU speed at
every width. Second-order gradients (GradInit differentiates through the backward pass) take other
kernels on the sliced input and differ by rounding, and so does the weight gradient of a small
batch (the last of an epoch); so a conv whose input channels fill whole channel blocks of the kernel
this CPU runs (multiples of 8 with AVX2, of 16 with AVX-512) keeps the strided kernel, which is
right there. Measured: a width-8 Fashion-MNIST cell (six variants, ten epochs) trains to the same
bits before and after the fix, on AVX-512 and with oneDNN at AVX2; so does the digits default.
"""

from __future__ import annotations

import functools
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tost.cpu import onednn_channel_block


def _format_of(x: Tensor) -> torch.memory_format:
    cl = x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
    return torch.channels_last if cl else torch.contiguous_format


@functools.cache
def channel_block() -> int:
    """The channel block of oneDNN's kernels on this CPU (8 with AVX2, 16 with AVX-512), read once."""
    return onednn_channel_block()


class _EveryNth(torch.autograd.Function):
    """Every (sh, sw)-th pixel, copied in the input's memory format, and a gradient in that format.

    A plain slice's gradient would be a row-major tensor; added to the channels-last gradient of
    the block's other branch, it would move the rest of the backward pass to other kernels (other
    bits); a channels-last gradient keeps it where the strided conv had it.
    """

    @staticmethod
    def forward(ctx: Any, x: Tensor, sh: int, sw: int) -> Tensor:
        ctx.shape, ctx.fmt, ctx.stride = x.shape, _format_of(x), (sh, sw)
        return x[:, :, ::sh, ::sw].contiguous(memory_format=ctx.fmt)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None, None]:
        sh, sw = ctx.stride
        out = grad.new_zeros(ctx.shape).contiguous(memory_format=ctx.fmt)
        out[:, :, ::sh, ::sw] = grad
        return out, None, None


class PointwiseConv(nn.Conv2d):
    """A 1×1 `nn.Conv2d` (same parameters, same state dict) whose stride slices the input on the CPU.

    Input channels that are whole channel blocks of this CPU's kernels (`channel_block`) keep the
    strided kernel, which is right there.
    """

    def __init__(self, cin: int, cout: int, stride: int | tuple[int, int] = 1, bias: bool = False) -> None:
        super().__init__(cin, cout, 1, stride, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        sh, sw = self.stride
        if x.device.type != "cpu" or (sh, sw) == (1, 1) or self.in_channels % channel_block() == 0:
            return super().forward(x)
        return F.conv2d(_EveryNth.apply(x, sh, sw), self.weight, self.bias, 1, 0, self.dilation, self.groups)
