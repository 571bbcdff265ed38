"""What masks cost: enforcement per training step, and the time each mask method takes to score.

(a) **Enforcement**: ResNet-20 on CIFAR-shaped random data, the project's `Trainer` with a random
    90 % mask. One training step (forward, backward, SGD step, enforcement; the loop's own ops) is
    timed over an epoch, and the fused enforcement (`Enforcer`: one `torch._foreach_mul_` over the
    pruned tensors) over many repetitions; their ratio is the share of a step spent keeping the mask.
    For comparison the upstream-style alternative is timed too: rebuild `|w| > 0` and multiply it
    into every conv gradient, per step.
(b) **Scoring**: every method in `tost.sparsity.methods.METHODS` except `file`, on the CIFAR variant
    of ResNet-18 (width configurable), through `find_mask` exactly as the mask stage calls it. Methods
    that train (gmp, and lt's rounds after the first) run `--dense-epochs` epochs of `--images` random
    images; their time is split into training (measured inside the train function) and the rest
    (scoring and selection), and they are marked training-dominated: at real settings their cost is
    `dense.epochs` (× rounds - 1 for lt) epochs of training, see bench_train for an epoch's time.
    magnitude, taylor and lt's first round score the dense stage's network, trained once per seed
    (here the init stands for it: its training is the dense stage's, not the method's).

Usage: python -m benchmarks.bench_mask [--width 64] [--batches 10] [--batch-size 128] [--device auto]
On a small CPU: python -m benchmarks.bench_mask --width 16 --batches 2 --batch-size 64 --images 512
Prints the settings and two markdown tables; nothing is asserted (speed is never tested by timing).
"""

from __future__ import annotations

import argparse
import dataclasses
import platform
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from tost import config
from tost.config import DataConfig
from tost.data import Prepared, Split
from tost.models import build
from tost.prune import context
from tost.runtime import Runtime
from tost.sparsity.mask import Mask, prunable
from tost.sparsity.methods import METHODS
from tost.train import Trainer

MEAN, STD = (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)
TRAINING = ("gmp", "lt")
DATA = DataConfig("digits", "", False, 0.1, 0.2, 0, 4, True)  # crop 4 and flip, as for CIFAR


def sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize()


def random_data(images: int, seed: int = 0) -> Prepared:
    """CIFAR-shaped uint8 images with random labels (speed does not depend on the pixels)."""
    rng = np.random.default_rng(seed)
    x = torch.from_numpy(rng.integers(0, 256, size=(images, 3, 32, 32), dtype=np.uint8))
    y = torch.from_numpy(rng.integers(0, 10, size=images))
    small = Split(x[:256].clone(), y[:256].clone())
    return Prepared(train=Split(x, y), val=small, test=small, num_classes=10, mean=MEAN, std=STD)


def random_mask(net: torch.nn.Module, sparsity: float) -> Mask:
    g = torch.Generator().manual_seed(0)
    return Mask({n: torch.rand(w.shape, generator=g) >= sparsity for n, w in prunable(net).items()})


def timed(fn: Callable[[], Any], dev: torch.device, reps: int) -> float:
    """Seconds per call of `fn`, after one warm-up call."""
    fn()
    sync(dev)
    start = time.perf_counter()
    for _ in range(reps):
        fn()
    sync(dev)
    return (time.perf_counter() - start) / reps


def enforcement(args: argparse.Namespace, rt: Runtime, train_cfg: config.TrainConfig) -> None:
    data = random_data(args.images)
    dcfg = DataConfig("digits", "", False, 0.1, 0.2, 0, 4, True)
    cfg = dataclasses.replace(train_cfg, epochs=2, batch_size=args.step_batch_size, nproc=1)
    torch.manual_seed(0)
    net = build("resnet20", 10, (3, 32, 32), 16)
    trainer = Trainer(net, random_mask(net, 0.9), data, dcfg, cfg, [], rt, 0, "bench")
    trainer.train_epoch()  # warm-up
    seconds = trainer.train_epoch()[2]
    step = seconds / len(trainer.train_loader)
    enforce = timed(trainer.enforce, rt.device, 200)

    convs = [m for m in trainer.model.modules() if isinstance(m, torch.nn.Conv2d)]
    for m in convs:
        m.weight.grad = torch.randn_like(m.weight)

    def upstream() -> None:
        for m in convs:
            m.weight.grad.mul_((m.weight.detach().abs() > 0).float())

    grad_mask = timed(upstream, rt.device, 200)
    print("\n### (a) Mask enforcement, ResNet-20 (width 16), 90 % random mask\n")
    print(f"batch {args.step_batch_size}, {args.images} CIFAR-shaped images, device {rt.device}\n")
    print("| what | time per step | share of a training step |")
    print("|---|---:|---:|")
    print(f"| training step (forward, backward, SGD, enforcement) | {step * 1e3:.2f} ms | 100 % |")
    share = 100 * enforce / step
    print(f"| fused enforcement (`_foreach_mul_`, tost) | {enforce * 1e3:.3f} ms | {share:.2f} % |")
    print(f"| upstream-style gradient masking (`|w|>0` per conv) | {grad_mask * 1e3:.3f} ms | "
          f"{100 * grad_mask / step:.2f} % |")  # fmt: skip


def scoring(args: argparse.Namespace, rt: Runtime, p: config.Params) -> None:
    data = random_data(args.images)
    options = dict(p.prune_options)
    if args.synflow_iters:
        options["synflow"] = dataclasses.replace(options["synflow"], iters=args.synflow_iters)
    rows = []
    trained = [0.0]  # seconds spent inside the train function by the current method

    for name in (n for n in METHODS if n != "file" and (not args.methods or n in args.methods)):
        prune = dataclasses.replace(
            p.prune, method=name, sparsity=0.9, rounds=args.lt_rounds if name == "lt" else 1, scope="global",
            batches=args.batches, batch_size=args.batch_size,
        )  # fmt: skip
        train = dataclasses.replace(p.train, batch_size=args.batch_size, nproc=1)
        dense_cfg = dataclasses.replace(p.dense, epochs=args.dense_epochs)
        params = dataclasses.replace(
            p, prune=prune, train=train, data=DATA, prune_options=options, dense=dense_cfg
        )
        torch.manual_seed(0)
        model = build("resnet18", 10, (3, 32, 32), args.width)
        ctx = context(params, data, model, rt)

        def timed(*a: Any, _train: Callable[..., Any] = ctx.train, **kw: Any) -> Any:
            start = time.perf_counter()
            out = _train(*a, **kw)
            trained[0] += time.perf_counter() - start
            return out

        ctx = dataclasses.replace(ctx, train=timed)
        trained[0] = 0.0
        sync(rt.device)
        start = time.perf_counter()
        mask = METHODS[name].find_mask(ctx, options.get(name)).mask
        sync(rt.device)
        total = time.perf_counter() - start
        note = ""
        if name in TRAINING:
            epochs = args.dense_epochs * (args.lt_rounds - 1 if name == "lt" else 1)
            note = f"training-dominated: {epochs} epoch(s) of {args.images} images"
        elif name in ("taylor", "snip", "grasp"):
            note = f"{args.batches} batches of {args.batch_size}"
        elif name == "synflow":
            note = f"{options['synflow'].iters} iterations, float64"
        rows.append((name, total, trained[0], total - trained[0], mask.stats().sparsity, note))
        print(f"# {name}: {total:.2f} s", flush=True)
    print(f"\n### (b) Mask methods on ResNet-18 (CIFAR variant, width {args.width}), sparsity 0.9, global\n")
    print("| method | total s | training s | scoring + selection s | sparsity | notes |")
    print("|---|---:|---:|---:|---:|---|")
    for name, total, train_s, rest, sparsity, note in rows:
        print(f"| {name} | {total:.2f} | {train_s:.2f} | {rest:.2f} | {sparsity:.4f} | {note} |")


def main() -> None:
    fmt = argparse.RawDescriptionHelpFormatter
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=fmt)
    ap.add_argument("--width", type=int, default=64, help="ResNet-18 width for (b) (64 is the paper's)")
    ap.add_argument("--batches", type=int, default=10, help="batches data-dependent scorers see")
    ap.add_argument("--batch-size", type=int, default=128, help="(b): scorers' and pre-training batch")
    ap.add_argument("--step-batch-size", type=int, default=128, help="(a): the training step's batch")
    ap.add_argument("--images", type=int, default=2048, help="random training images")
    ap.add_argument("--dense-epochs", type=int, default=1, help="epochs of each run gmp and lt train")
    ap.add_argument("--lt-rounds", type=int, default=2)
    ap.add_argument("--synflow-iters", type=int, default=0, help="0: params.yaml's prune.synflow.iters")
    ap.add_argument("--methods", nargs="*", help="only these methods in (b)")
    ap.add_argument("--skip", choices=["enforcement", "scoring"], help="leave out one part")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--no-channels-last", dest="channels_last", action="store_false")
    args = ap.parse_args()
    p = config.load("params.yaml")
    train = dataclasses.replace(
        p.train, device=args.device, channels_last=args.channels_last, compile=args.compile
    )
    rt = Runtime.from_config(train)
    print(f"# {platform.node()} {platform.processor() or platform.machine()} torch {torch.__version__} "
          f"threads {torch.get_num_threads()} device {rt.device} "
          f"{torch.cuda.get_device_name() if rt.device.type == 'cuda' else ''}")  # fmt: skip
    print(f"# settings: {vars(args)}")
    if args.skip != "enforcement":
        enforcement(args, rt, p.train)
    if args.skip != "scoring":
        scoring(args, rt, p)


if __name__ == "__main__":
    main()
