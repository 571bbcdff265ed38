"""Layers the models and tricks share.

`PointwiseConv` exists because of an open oneDNN bug (uxlfoundation/oneDNN issue 6035): the CPU
kernel of a strided 1×1 convolution's weight gradient first copies every stride-th pixel into a
workspace ("reduce to unit stride") and, for channels-last input with fewer input channels than its
channel block (8 with AVX2, 16 with AVX-512), writes past that workspace: wrong weight gradients,
heap corruption, crashes or hangs (docs/troubleshooting.md). Taking every stride-th pixel ourselves
and running a unit-stride 1×1 convolution is the same arithmetic, and oneDNN then never takes that
path: where the strided kernel was right, the results are bit-identical (measured forward, input and
weight gradients, AVX2 and AVX-512), so channels-last keeps its CPU speed at every width.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


class PointwiseConv(nn.Conv2d):
    """A 1×1 `nn.Conv2d` (same parameters, same state dict) whose stride slices the input on the CPU."""

    def __init__(self, cin: int, cout: int, stride: int | tuple[int, int] = 1, bias: bool = False) -> None:
        super().__init__(cin, cout, 1, stride, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        sh, sw = self.stride
        if x.device.type != "cpu" or (sh, sw) == (1, 1):  # only oneDNN has the bug; cuDNN keeps its kernel
            return super().forward(x)
        return F.conv2d(x[:, :, ::sh, ::sw], self.weight, self.bias, 1, 0, self.dilation, self.groups)
