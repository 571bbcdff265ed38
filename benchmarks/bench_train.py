"""Images/s of tost's training step (eager and captured as a CUDA graph) against the original's loop.

All loops train the same sparse (90 %, random) ResNet on the same CIFAR-shaped random data, on the same
device, in one process, at each `--batch-sizes`:

- **upstream-style**: a torchvision `Dataset` returning PIL images, `RandomCrop(32, padding=4)`,
  `RandomHorizontalFlip`, `ToTensor`, `Normalize` per image in `DataLoader` workers; fp32; after
  `backward()` the mask is recomputed from the weights (`|w| > 0`) and multiplied into every conv
  gradient, as `train_ticket.py` does; `.item()` per step for the running meters.
- **tost eager**: the project's `Trainer` with `train.cuda_graphs: false`: the uint8 split on the
  device, batched crop/flip/normalise there, fused mask enforcement, no host sync per step, bf16
  autocast and channels-last on CUDA.
- **tost captured** (CUDA only): the same `Trainer` with the whole step replayed as a CUDA graph.

For the tost loops it also times one evaluation of a 5,000-image val and a 10,000-image test split
(what every epoch runs) and reports it as a share of the epoch. With `--project` it prints the
GPU-hours of the paper preset's full table from the measured epoch time: every (method, variant,
sparsity, seed) run of `train.epochs`, plus the dense stage once per seed, GMP's own dense run per
cell, and the lottery tickets' extra rounds.

Usage: python -m benchmarks.bench_train [--arch resnet18 --width 64 --images 45000] [--batch-sizes 128 512]
On a small CPU:  python -m benchmarks.bench_train --arch resnet20 --width 16 --images 2048 --epochs 1
Prints markdown; nothing is asserted (speed is never tested by timing).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import platform
import time

import numpy as np
import torch
import torch.nn.functional as F
import yaml
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

from sweep import plan
from tost import config
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
    """One epoch the way the original training script runs it; returns the images seen."""
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


def sparse_model(arch: str, width: int, seed: int = 0) -> tuple[torch.nn.Module, Mask]:
    torch.manual_seed(seed)
    net = build(arch, 10, (3, 32, 32), width)
    g = torch.Generator().manual_seed(seed)
    mask = Mask({n: torch.rand(w.shape, generator=g) >= 0.9 for n, w in prunable(net).items()})
    mask.apply_(prunable(net))
    return net, mask


def sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize()


def upstream(args: argparse.Namespace, x: np.ndarray, y: np.ndarray, batch: int, dev: torch.device) -> float:
    tf = transforms.Compose([
        transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip(),
        transforms.ToTensor(), transforms.Normalize(MEAN, STD),
    ])  # fmt: skip
    loader = DataLoader(PilDataset(x, y, tf), batch_size=batch, shuffle=True, num_workers=args.workers,
                        persistent_workers=args.workers > 0)  # fmt: skip
    net = sparse_model(args.arch, args.width)[0].to(dev)
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, weight_decay=2e-4)
    upstream_epoch(net, loader, opt, dev)  # warm-up (worker start, allocator)
    sync(dev)
    t0 = time.perf_counter()
    seen = sum(upstream_epoch(net, loader, opt, dev) for _ in range(args.epochs))
    sync(dev)
    return seen / (time.perf_counter() - t0)


def tost_loop(
    args: argparse.Namespace, p: config.Params, data: Prepared, batch: int, graphs: bool
) -> tuple[float, float]:
    """Images/s of steady training epochs, and seconds of one evaluation of 15,000 images (val + test)."""
    cfg = dataclasses.replace(p.train, epochs=args.epochs + 1, batch_size=batch, cuda_graphs=graphs, nproc=1)
    rt = Runtime.from_config(cfg)
    net, mask = sparse_model(args.arch, args.width)
    trainer = Trainer(net, mask, data, p.data, cfg, [], rt, 0, "bench")
    trainer.train_epoch()  # warm-up: cuDNN autotuning, capture
    seconds = sum(trainer.train_epoch()[2] for _ in range(args.epochs))
    key = trainer.graph_key()
    for evaluate in trainer.evaluations:  # warm-up (and capture) of the evaluation graphs
        evaluate(key)
    sync(rt.device)
    t0 = time.perf_counter()
    for evaluate in trainer.evaluations:
        evaluate(key)
    sync(rt.device)
    evaluated = len(data.val.y) + len(data.test.y)
    return len(data.train.y) * args.epochs / seconds, (time.perf_counter() - t0) * 15_000 / evaluated


def paper_gpu_hours(epoch_s: float, eval_s: float) -> tuple[float, int]:
    """GPU-hours of `make table PRESET=paper` at this epoch time, and the number of epochs it trains."""
    with open("params.yaml", encoding="utf-8") as f:
        raw = plan.apply_presets(yaml.safe_load(f), ["paper"])
    p = config.parse(raw)
    r, e = p.report, p.train.epochs
    variants, dense_e = len(p.tricks.run), p.dense.epochs
    epochs = len(r.methods) * variants * len(r.sparsities) * len(r.seeds) * e  # the sparse runs
    epochs += len(r.seeds) * dense_e  # the dense stage, shared by every method and sparsity of a seed
    if "gmp" in r.methods:  # GMP prunes while it trains: its own dense run per cell
        epochs += len(r.sparsities) * len(r.seeds) * dense_e
    if "lt" in r.methods:  # rounds after the first (which is the dense stage's network)
        epochs += sum(plan.lt_rounds(s, r.lt_rate) - 1 for s in r.sparsities) * len(r.seeds) * dense_e
    return epochs * (epoch_s + eval_s) / 3600, epochs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", default="resnet18")
    ap.add_argument("--width", type=int, default=64)
    ap.add_argument("--images", type=int, default=45_000)
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[128, 512])
    ap.add_argument("--epochs", type=int, default=2, help="timed epochs per loop, after one warm-up epoch")
    ap.add_argument("--workers", type=int, default=8, help="DataLoader workers of the upstream-style loop")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--no-upstream", action="store_true", help="skip the upstream-style loop")
    ap.add_argument("--project", action="store_true", help="project the paper preset's GPU-hours")
    args = ap.parse_args()

    p = config.load("params.yaml")
    p = dataclasses.replace(p, train=dataclasses.replace(p.train, device=args.device))
    dev = Runtime.from_config(p.train).device
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(args.images, 32, 32, 3), dtype=np.uint8)
    y = rng.integers(0, 10, size=args.images)
    images = torch.from_numpy(x).permute(0, 3, 1, 2).contiguous()
    labels = torch.from_numpy(y)
    val, test = (
        Split(images[:n].clone(), labels[:n].clone())
        for n in (min(5000, args.images), min(10_000, args.images))
    )
    data = Prepared(train=Split(images, labels), val=val, test=test, num_classes=10, mean=MEAN, std=STD)
    p = dataclasses.replace(p, data=dataclasses.replace(p.data, crop_padding=4, flip=True))
    name = torch.cuda.get_device_name() if dev.type == "cuda" else platform.processor() or platform.machine()
    print(f"# {platform.node()} {name} torch {torch.__version__} threads {torch.get_num_threads()}")
    print(f"# {args.arch} width {args.width}, {args.images} CIFAR-shaped images, 90 % random mask, "
          f"{args.epochs} timed epochs after one warm-up\n")  # fmt: skip
    print("| batch | loop | images/s | epoch of 45k (s) | eval of 15k (s) | eval share | vs upstream |")
    print("|---:|---|---:|---:|---:|---:|---:|")
    best = None
    for batch in args.batch_sizes:
        up = math.nan if args.no_upstream else upstream(args, x, y, batch, dev)
        if not args.no_upstream:
            print(f"| {batch} | upstream-style | {up:,.0f} | {45_000 / up:.2f} | | | 1.00× |", flush=True)
        for graphs in [False, True] if dev.type == "cuda" else [False]:
            ips, eval_s = tost_loop(args, p, data, batch, graphs)
            epoch_s = 45_000 / ips
            share = eval_s / (epoch_s + eval_s)
            name = "tost captured" if graphs else "tost eager"
            print(f"| {batch} | {name} | {ips:,.0f} | {epoch_s:.2f} | {eval_s:.2f} | {100 * share:.0f} % | "
                  f"{ips / up:.2f}× |", flush=True)  # fmt: skip
            if batch == 128 and (best is None or epoch_s < best[0]):
                best = (epoch_s, eval_s, name)
    if args.project and best is not None:
        hours, epochs = paper_gpu_hours(best[0], best[1])
        print(f"\nPaper preset, full table: {epochs:,} epochs of 45k images at {best[0] + best[1]:.2f} s "
              f"(training + evaluation, {best[2]}, batch 128): {hours:,.1f} GPU-hours")  # fmt: skip


if __name__ == "__main__":
    main()
