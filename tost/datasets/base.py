"""The raw form every dataset loader returns, before validation splits and augmentation."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class RawDataset:
    """Images as uint8 [N, C, H, W] and labels as int64 [N]; `test` is None when there is no official one."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor | None
    test_y: torch.Tensor | None
    num_classes: int
