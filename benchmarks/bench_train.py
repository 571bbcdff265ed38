"""Images/s of tost's training step against a faithful re-creation of the original ToST loop.

Both train the same ResNet on the same CIFAR-shaped data on the same device, with the same sparse
mask, batch size and optimiser, in one process:

- **upstream-style**: a torchvision `Dataset` returning PIL images, `RandomCrop(32, padding=4)`,
  `RandomHorizontalFlip`, `ToTensor`, `Normalize` per image in `DataLoader` workers; fp32; after
  `backward()` the mask is recomputed from the weights (`|w| > 0`) and multiplied into every conv
  gradient, as `train_ticket.py` does; `.item()` per step for the running meters.
- **tost**: the whole uint8 split on the device, batched crop/flip/normalise on the device, the
  project's `Trainer` (fused `_foreach_mul_` mask enforcement, no host sync per step, bf16 autocast
  and channels-last on CUDA, optional `torch.compile`).

Usage: python -m benchmarks.bench_train [--arch resnet20] [--images 4096] [--epochs 2] [--compile]
       [--cpu-bf16]  (bf16 autocast for the tost loop on a CPU with bf16 units, e.g. AMX; not the
       pipeline's default, which autocasts on CUDA only and keeps CPU results in fp32)
Prints one line per loop and the ratio; nothing is asserted (speed is never tested by timing).
"""

from __future__ import annotations

import argparse
import dataclasses
import platform
import time

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

from tost import config
from tost.config import DataConfig, TrainConfig
from tost.data import Prepared, Split
from tost.models import build
from tost.runtime import Runtime
from tost.sparsity.mask import Mask, prunable
from tost.train import Trainer

MEAN, STD = (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)


class PilDataset(Dataset):
    """What torchvision's CIFAR10 does per item: a PIL image through the transform pipeline."""

    def __init__(self, x: np.ndarray, y: np.ndarray, tf: transforms.Compose) -> None:
        self.x, self.y, self.tf = x, y, tf

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.tf(Image.fromarray(self.x[i])), int(self.y[i])


def upstream_epoch(
    model: torch.nn.Module, loader: DataLoader, opt: torch.optim.Optimizer, dev: torch.device
) -> int:
    model.train()
    seen, loss_sum, correct = 0, 0.0, 0
    for x, y in loader:
        x, y = x.to(dev), y.to(dev)
        out = model(x)
        loss = F.cross_entropy(out, y)
        opt.zero_grad()
        loss.backward()
        for m in model.modules():
            if isinstance(m, torch.nn.Conv2d):
                m.weight.grad.mul_((m.weight.detach().abs() > 0).float())
        opt.step()
        loss_sum += loss.item() * len(y)  # the original's AverageMeter reads every step
        correct += int((out.argmax(1) == y).sum().item())
        seen += len(y)
    return seen


def sparse_model(arch: str, width: int, sparsity: float, seed: int) -> tuple[torch.nn.Module, Mask]:
    torch.manual_seed(seed)
    net = build(arch, 10, (3, 32, 32), width)
    g = torch.Generator().manual_seed(seed)
    mask = Mask({n: torch.rand(w.shape, generator=g) >= sparsity for n, w in prunable(net).items()})
    mask.apply_(prunable(net))
    return net, mask


def main() -> None:
    fmt = argparse.RawDescriptionHelpFormatter
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=fmt)
    ap.add_argument("--arch", default="resnet20")
    ap.add_argument("--width", type=int, default=16)
    ap.add_argument("--images", type=int, default=4096)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--epochs", type=int, default=2, help="timed epochs per loop, after one warm-up epoch")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--no-channels-last", dest="channels_last", action="store_false")
    ap.add_argument("--device", default="auto")
    ap.add_argument(
        "--cpu-bf16", action="store_true",
        help="tost loop only: bf16 autocast on the CPU too (the pipeline uses it on CUDA only)",
    )  # fmt: skip
    args = ap.parse_args()

    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(args.images, 32, 32, 3), dtype=np.uint8)
    y = rng.integers(0, 10, size=args.images)
    train = dataclasses.replace(
        config.load("params.yaml").train, device=args.device, channels_last=args.channels_last,
        compile=args.compile, cpu_amp=args.cpu_bf16,
    )  # fmt: skip
    rt = Runtime.from_config(train)
    dev = rt.device
    print(f"# {platform.node()} {platform.processor() or platform.machine()} torch {torch.__version__} "
          f"threads {torch.get_num_threads()} device {dev} "
          f"{torch.cuda.get_device_name() if dev.type == 'cuda' else ''}")  # fmt: skip

    # upstream-style
    tf = transforms.Compose([
        transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip(),
        transforms.ToTensor(), transforms.Normalize(MEAN, STD),
    ])  # fmt: skip
    loader = DataLoader(PilDataset(x, y, tf), batch_size=args.batch_size, shuffle=True,
                        num_workers=args.workers, persistent_workers=args.workers > 0)  # fmt: skip
    net, _ = sparse_model(args.arch, args.width, 0.9, 0)
    net = net.to(dev)
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, weight_decay=2e-4)
    upstream_epoch(net, loader, opt, dev)  # warm-up (worker start, allocator)
    if dev.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    seen = sum(upstream_epoch(net, loader, opt, dev) for _ in range(args.epochs))
    if dev.type == "cuda":
        torch.cuda.synchronize()
    up = seen / (time.perf_counter() - t0)
    print(f"upstream-style loop: {up:10.1f} images/s")

    # tost
    data = Prepared(
        train=Split(torch.from_numpy(x).permute(0, 3, 1, 2).contiguous(), torch.from_numpy(y)),
        val=Split(torch.from_numpy(x[:256]).permute(0, 3, 1, 2).contiguous(), torch.from_numpy(y[:256])),
        test=Split(torch.from_numpy(x[:256]).permute(0, 3, 1, 2).contiguous(), torch.from_numpy(y[:256])),
        num_classes=10, mean=MEAN, std=STD,
    )  # fmt: skip
    dcfg = DataConfig("digits", "", False, 0.1, 0.2, 4, True)
    cfg = TrainConfig(
        epochs=args.epochs + 1, batch_size=args.batch_size, eval_batch_size=512, lr=0.1, momentum=0.9,
        nesterov=False, weight_decay=2e-4, schedule="cosine", milestones=(), gamma=0.1, device=args.device,
        amp=True, cpu_amp=args.cpu_bf16, channels_last=args.channels_last, compile=args.compile,
        max_grad_norm=0.0, nproc=1,
    )  # fmt: skip
    net, mask = sparse_model(args.arch, args.width, 0.9, 0)
    trainer = Trainer(net, mask, data, dcfg, cfg, [], rt, 0, "bench")
    trainer.train_epoch()  # warm-up (and compilation)
    seconds = sum(trainer.train_epoch()[2] for _ in range(args.epochs))
    ours = args.images * args.epochs / seconds
    flags = f"compile={args.compile}, channels_last={args.channels_last}, autocast={rt.amp_dtype}"
    print(f"tost loop:           {ours:10.1f} images/s  ({flags})")
    print(f"speed-up: {ours / up:.2f}x")


if __name__ == "__main__":
    main()
