"""Aggregate images/s when several small experiments share one GPU (`report.per_gpu`).

A ResNet-20 on Fashion-MNIST-shaped data leaves most of a large GPU idle. This starts N training
processes at once (N = each of `--shares`), each the project's `Trainer` (captured step on CUDA) on
its own random 28×28 data for `--epochs` steady epochs after a warm-up, all on the same device, and
reports the images per second of all of them together against one alone.

Usage: python -m benchmarks.bench_share [--shares 1 2 4] [--images 54000] [--epochs 3]
On a CPU (to try it): python -m benchmarks.bench_share --images 2048 --epochs 1 --shares 1 2
Prints markdown; nothing is asserted (speed is never tested by timing).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import time

import torch

from tost import config
from tost.data import Prepared, Split
from tost.models import build
from tost.runtime import Runtime
from tost.sparsity.mask import Mask, prunable
from tost.train import Trainer


def worker(args: argparse.Namespace) -> None:
    """One experiment: prints its trained images and seconds as JSON."""
    p = config.load("params.yaml")
    cfg = dataclasses.replace(p.train, device=args.device, epochs=args.epochs + 1, batch_size=args.batch_size)
    rt = Runtime.from_config(cfg)
    g = torch.Generator().manual_seed(args.seed)
    x = torch.randint(0, 256, (args.images, 1, 28, 28), generator=g, dtype=torch.uint8)
    y = torch.randint(0, 10, (args.images,), generator=g)
    small = Split(x[:512].clone(), y[:512].clone())
    data = Prepared(Split(x, y), small, small, 10, (0.286,), (0.353,))
    torch.manual_seed(args.seed)
    net = build("resnet20", 10, (1, 28, 28), args.width)
    mask = Mask({n: torch.rand(w.shape, generator=g) >= 0.95 for n, w in prunable(net).items()})
    trainer = Trainer(net, mask, data, p.data, cfg, [], rt, args.seed, f"share{args.seed}")
    trainer.train_epoch()  # warm-up and capture
    start = time.perf_counter()
    seconds = sum(trainer.train_epoch()[2] for _ in range(args.epochs))
    print(json.dumps({"images": args.images * args.epochs, "seconds": seconds, "start": start}))


def run(args: argparse.Namespace, n: int) -> float:
    """Aggregate images/s of `n` experiments started together."""
    env = {**os.environ, "OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // n))}
    cmd = [sys.executable, "-m", "benchmarks.bench_share", "--worker", "--images", str(args.images),
           "--epochs", str(args.epochs), "--batch-size", str(args.batch_size), "--width", str(args.width),
           "--device", args.device]  # fmt: skip
    procs = [
        subprocess.Popen([*cmd, "--seed", str(i)], stdout=subprocess.PIPE, text=True, env=env)
        for i in range(n)
    ]
    results = [json.loads(p.communicate()[0].strip().splitlines()[-1]) for p in procs]
    # The timed epochs overlap when the processes run together: images of all over the longest one.
    return sum(r["images"] for r in results) / max(r["seconds"] for r in results)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shares", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--images", type=int, default=54_000)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--width", type=int, default=16)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return worker(args)
    name = torch.cuda.get_device_name() if torch.cuda.is_available() and args.device != "cpu" else "CPU"
    print(f"# ResNet-20 (width {args.width}), 95 % random mask, {args.images} 28x28 images, batch "
          f"{args.batch_size}, {args.epochs} timed epochs, on {name}\n")  # fmt: skip
    print("| experiments at once | aggregate images/s | vs one alone |")
    print("|---:|---:|---:|")
    alone = None
    for n in args.shares:
        ips = run(args, n)
        alone = alone or ips
        print(f"| {n} | {ips:,.0f} | {ips / alone:.2f}× |", flush=True)
    return None


if __name__ == "__main__":
    main()
