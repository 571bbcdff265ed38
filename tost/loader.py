"""Batches built on the device: the whole uint8 split lives where training runs.

Random crop (zero padding), horizontal flip and normalisation are done for a whole batch at once with
tensor indexing, so there is no per-image Python, no worker process and no host→device copy per
step. The distribution matches torchvision's RandomCrop(padding) + RandomHorizontalFlip(0.5).
Under several processes each rank keeps a strided shard of every global batch (`set_shard`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from tost.config import DataConfig, TrainConfig
from tost.data import Prepared, Split
from tost.errors import TrainingError
from tost.runtime import Runtime

CropFlip = tuple[Tensor | None, Tensor | None, Tensor | None]


def draw_crop_flip(b: int, pad: int, flip: bool, g: torch.Generator, device: torch.device) -> CropFlip:
    """The random offsets (rows, columns) and flips of a batch of `b` images, drawn in a fixed order.

    Drawing is separate from applying so that ranks of a multi-process run can all draw a whole global
    batch's augmentation (keeping their generators in step) and apply only their shard's part.
    """
    oy = torch.randint(0, 2 * pad + 1, (b,), generator=g, device=device) if pad else None
    ox = torch.randint(0, 2 * pad + 1, (b,), generator=g, device=device) if pad else None
    flips = torch.rand(b, generator=g, device=device) < 0.5 if flip else None
    return oy, ox, flips


def apply_crop_flip(x: Tensor, pad: int, draws: CropFlip) -> Tensor:
    """Crop the zero-padded batch at the drawn offsets and mirror the drawn images, uint8 in and out."""
    b, c, h, w = x.shape
    dev = x.device
    oy, ox, flips = draws
    if pad:
        xp = F.pad(x, (pad, pad, pad, pad))
        rows = (oy[:, None] + torch.arange(h, device=dev))[:, None, :, None]
        cols = (ox[:, None] + torch.arange(w, device=dev))[:, None, None, :]
        bi = torch.arange(b, device=dev)[:, None, None, None]
        ci = torch.arange(c, device=dev)[None, :, None, None]
        x = xp[bi, ci, rows, cols]
    if flips is not None:
        x = torch.where(flips[:, None, None, None], x.flip(3), x)
    return x


class DeviceLoader:
    """Iterates (images, labels) batches of one split on `device`, normalised to float.

    The float type is torch's default (float32 unless changed), the one models are built in, so a
    float64 run (the multi-process equivalence test) needs no other switch.
    """

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
        dtype = torch.get_default_dtype()
        self.mean = torch.tensor(mean, device=device, dtype=dtype).view(1, -1, 1, 1) * 255.0
        self.std = torch.tensor(std, device=device, dtype=dtype).view(1, -1, 1, 1) * 255.0
        self.generator = torch.Generator(device=device)
        self.generator.manual_seed(seed)
        self.rank, self.world_size = 0, 1

    def set_shard(self, rank: int, world_size: int) -> None:
        """From now on yield only this rank's images of every batch: every `world_size`-th one.

        Batches, permutation and augmentation stay those of the whole (global) batch, drawn from the
        same generator on every rank, so the ranks' shards together are exactly the single-process
        batch. A shard can be empty (a last batch smaller than `world_size`).
        """
        self.rank, self.world_size = rank, world_size

    def global_batch_size(self, step: int) -> int:
        """Images in batch `step` over all ranks (the last batch may be short)."""
        return min(self.batch_size, len(self.y) - step * self.batch_size)

    def __len__(self) -> int:
        return -(-len(self.y) // self.batch_size)

    @property
    def num_images(self) -> int:
        return len(self.y)

    def normalise(self, x: Tensor) -> Tensor:
        out = (x.to(self.mean.dtype) - self.mean) / self.std
        return out.contiguous(memory_format=self.memory_format)

    def plan(self) -> Iterator[tuple[Tensor, CropFlip]]:
        """Each batch's image indices and augmentation draws, drawn in the order they always were.

        Drawing is apart from building the batch (`batch`), so that a captured training step can take
        the draws as its inputs and do the gathering and augmenting inside the graph.
        """
        n = len(self.y)
        if self.train:
            order = torch.randperm(n, generator=self.generator, device=self.x.device)
        else:
            order = torch.arange(n, device=self.x.device)
        for start in range(0, n, self.batch_size):
            idx = order[start : start + self.batch_size]
            draws: CropFlip = (None, None, None)
            if self.train:
                draws = draw_crop_flip(len(idx), self.pad, self.flip, self.generator, idx.device)
            if self.world_size > 1:  # this rank's shard of the global batch and of its augmentation
                shard = slice(self.rank, None, self.world_size)
                idx = idx[shard]
                draws = tuple(d if d is None else d[shard] for d in draws)
            yield idx, draws

    def batch(self, idx: Tensor, draws: CropFlip = (None, None, None)) -> tuple[Tensor, Tensor]:
        """The normalised (augmented) images and the labels of `idx`."""
        x = self.x[idx]
        if draws[0] is not None or draws[2] is not None:
            x = apply_crop_flip(x, self.pad, draws)
        return self.normalise(x), self.y[idx]

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        for idx, draws in self.plan():
            yield self.batch(idx, draws)


def make_loaders(
    data: Prepared, dcfg: DataConfig, cfg: TrainConfig, rt: Runtime, seed: int
) -> tuple[DeviceLoader, DeviceLoader, DeviceLoader]:
    """Train (augmented, shuffled with a seeded generator), val and test loaders on the device."""
    if cfg.batch_size > data.train.y.numel():
        raise TrainingError(
            f"train.batch_size={cfg.batch_size} is larger than the training split "
            f"({data.train.y.numel()} images); lower it"
        )
    if cfg.batch_size % rt.world_size:
        raise TrainingError(
            f"train.batch_size={cfg.batch_size} does not split over {rt.world_size} processes; "
            f"make it a multiple of {rt.world_size}"
        )
    train = DeviceLoader(
        data.train, data.mean, data.std, cfg.batch_size, rt.device, train=True,
        crop_padding=dcfg.crop_padding, flip=dcfg.flip, seed=seed, memory_format=rt.memory_format,
    )  # fmt: skip
    return train, *eval_loaders(data, cfg.eval_batch_size, rt)


def eval_loaders(data: Prepared, batch_size: int, rt: Runtime) -> tuple[DeviceLoader, DeviceLoader]:
    """Val and test in order, unaugmented, on the device."""
    val, test = (
        DeviceLoader(
            s, data.mean, data.std, batch_size, rt.device, train=False, memory_format=rt.memory_format
        )
        for s in (data.val, data.test)
    )
    return val, test
