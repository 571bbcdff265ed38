"""Batches built on the device: the whole uint8 split lives where training runs.

Random crop (zero padding), horizontal flip and normalisation are done for a whole batch at once with
tensor indexing, so there is no per-image Python, no worker process and no host→device copy per
step. The distribution matches torchvision's RandomCrop(padding) + RandomHorizontalFlip(0.5).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from tost.data import Split


def random_crop_flip(x: Tensor, pad: int, flip: bool, g: torch.Generator) -> Tensor:
    """Per-image random crop of the zero-padded batch and random horizontal flip, uint8 in and out."""
    b, c, h, w = x.shape
    dev = x.device
    if pad:
        xp = F.pad(x, (pad, pad, pad, pad))
        oy = torch.randint(0, 2 * pad + 1, (b,), generator=g, device=dev)
        ox = torch.randint(0, 2 * pad + 1, (b,), generator=g, device=dev)
        rows = (oy[:, None] + torch.arange(h, device=dev))[:, None, :, None]
        cols = (ox[:, None] + torch.arange(w, device=dev))[:, None, None, :]
        bi = torch.arange(b, device=dev)[:, None, None, None]
        ci = torch.arange(c, device=dev)[None, :, None, None]
        x = xp[bi, ci, rows, cols]
    if flip:
        flips = torch.rand(b, generator=g, device=dev) < 0.5
        x = torch.where(flips[:, None, None, None], x.flip(3), x)
    return x


class DeviceLoader:
    """Iterates (images, labels) batches of one split on `device`, normalised to float32."""

    def __init__(
        self,
        split: Split,
        mean: Sequence[float],
        std: Sequence[float],
        batch_size: int,
        device: torch.device,
        *,
        train: bool,
        crop_padding: int = 0,
        flip: bool = False,
        seed: int = 0,
        memory_format: torch.memory_format = torch.contiguous_format,
    ) -> None:
        self.x = split.x.to(device)
        self.y = split.y.to(device)
        self.batch_size = batch_size
        self.train = train
        self.pad, self.flip = crop_padding, flip
        self.memory_format = memory_format
        self.mean = torch.tensor(mean, device=device, dtype=torch.float32).view(1, -1, 1, 1) * 255.0
        self.std = torch.tensor(std, device=device, dtype=torch.float32).view(1, -1, 1, 1) * 255.0
        self.generator = torch.Generator(device=device)
        self.generator.manual_seed(seed)

    def __len__(self) -> int:
        return -(-len(self.y) // self.batch_size)

    @property
    def num_images(self) -> int:
        return len(self.y)

    def normalise(self, x: Tensor) -> Tensor:
        out = (x.float() - self.mean) / self.std
        return out.contiguous(memory_format=self.memory_format)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        n = len(self.y)
        if self.train:
            order = torch.randperm(n, generator=self.generator, device=self.x.device)
        else:
            order = torch.arange(n, device=self.x.device)
        for start in range(0, n, self.batch_size):
            idx = order[start : start + self.batch_size]
            x = self.x[idx]
            if self.train:
                x = random_crop_flip(x, self.pad, self.flip, self.generator)
            yield self.normalise(x), self.y[idx]
