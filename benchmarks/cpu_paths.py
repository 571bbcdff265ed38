"""Which CPU path pays on the CPU this runs on: the ratios that decide tost's CPU defaults.

In one process (configurations interleaved, best of `--rounds`), the Trainer's own training step on
a sparse (90 %, random) ResNet-20 of width 16 on 28x28 grey images, batch 128, 10 classes:

- fp32 eager, channels-last (the default) against NCHW, against bf16 autocast (`train.cpu_amp`)
  and against `torch.compile` (`train.compile`; its first epoch, compile included, is timed apart);
- one thread against two (`train.threads`);
- a sweep's throughput: two experiments of one thread each, at once (two processes), against one
  experiment of two threads (what `report.jobs: 0` chooses between).

It also says whether two compiled runs, and a compiled and an eager one, give the same bits (the
weights after the timed epochs). Prints markdown headed by the CPU's name; nothing is asserted.

Usage: python -m benchmarks.cpu_paths [--images 1280 --epochs 2 --rounds 2] [--no-compile]
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import subprocess
import sys

import torch

from tost import config
from tost.data import Prepared, Split
from tost.models import build
from tost.runtime import Runtime, cpu_flags, cpu_name, has_bf16_units
from tost.sparsity.mask import Mask, prunable
from tost.train import Trainer

PATHS = {  # name -> train.* changes
    "fp32 eager, channels-last": {},
    "fp32 eager, NCHW": {"channels_last": False},
    "bf16 autocast": {"cpu_amp": True},
    "fp32 compiled": {"compile": True},
}


def data(n: int, size: int = 28) -> Prepared:
    g = torch.Generator().manual_seed(0)

    def split(m: int) -> Split:
        return Split(torch.randint(0, 256, (m, 1, size, size), generator=g, dtype=torch.uint8),
                     torch.randint(0, 10, (m,), generator=g))  # fmt: skip

    return Prepared(split(n), split(64), split(64), 10, (0.3,), (0.3,))


def sparse_grey(width: int) -> tuple[torch.nn.Module, Mask]:
    """ResNet-20 for 1x28x28 images with a seeded random 90 % mask applied."""
    torch.manual_seed(0)
    net = build("resnet20", 10, (1, 28, 28), width)
    g = torch.Generator().manual_seed(0)
    mask = Mask({n: torch.rand(w.shape, generator=g) >= 0.9 for n, w in prunable(net).items()})
    mask.apply_(prunable(net))
    return net, mask


def run(changes: dict, images: int, epochs: int, width: int, threads: int) -> dict:
    """Steady images/s over `epochs` epochs after a first one, and the weights' fingerprint.

    The first epoch is timed apart (compiling happens there); equal fingerprints: the same bits.
    """
    torch.set_num_threads(threads)
    p = config.load("params.yaml")
    cfg = dataclasses.replace(p.train, device="cpu", batch_size=128, epochs=epochs + 1, **changes)
    net, mask = sparse_grey(width)
    trainer = Trainer(net, mask, data(images), p.data, cfg, [], Runtime.from_config(cfg), 0, "bench")
    first = trainer.train_epoch()[2]
    seconds = sum(trainer.train_epoch()[2] for _ in range(epochs))
    weights = torch.cat([t.detach().flatten().double() for t in trainer.model.state_dict().values()])
    bits = hashlib.sha256(weights.numpy().tobytes()).hexdigest()[:16]
    return {"per_s": images * epochs / seconds, "first_s": first, "bits": bits}


def _child(args: argparse.Namespace) -> None:
    print(json.dumps(run(PATHS[args.child], args.images, args.epochs, args.width, 1)), flush=True)


def pair(args: argparse.Namespace) -> float:
    """Two one-thread experiments at once: the sum of their steady images/s."""
    sizes = ["--images", str(args.images), "--epochs", str(args.epochs), "--width", str(args.width)]
    cmd = [sys.executable, "-m", "benchmarks.cpu_paths", "--child", "fp32 eager, channels-last", *sizes]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True) for _ in range(2)]
    return sum(json.loads(p.communicate()[0].strip().splitlines()[-1])["per_s"] for p in procs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=1280)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--width", type=int, default=16)
    ap.add_argument("--no-compile", dest="compile", action="store_false")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return _child(args)
    paths = [k for k in PATHS if args.compile or "compiled" not in k]
    runs: dict[tuple[str, int], list[dict]] = {}
    for _ in range(args.rounds):
        for threads in (1, 2):
            for name in paths:
                runs.setdefault((name, threads), []).append(
                    run(PATHS[name], args.images, args.epochs, args.width, threads)
                )
    best = {k: max(v, key=lambda r: r["per_s"]) for k, v in runs.items()}
    both = pair(args)
    base = {t: best[("fp32 eager, channels-last", t)]["per_s"] for t in (1, 2)}
    units = "with" if has_bf16_units(cpu_flags()) else "without"
    print(f"### {cpu_name()} ({torch.backends.cpu.get_cpu_capability()}, {units} bf16 units), torch "
          f"{torch.__version__}\n")  # fmt: skip
    print(f"ResNet-20 w{args.width}, 28x28, batch 128, {args.images} images, best of {args.rounds} x "
          f"{args.epochs} steady epochs\n")  # fmt: skip
    print("| path | threads | images/s | vs fp32 eager channels-last | first epoch (s) |")
    print("|---|---:|---:|---:|---:|")
    for (name, threads), r in best.items():
        ratio = r["per_s"] / base[threads]
        print(f"| {name} | {threads} | {r['per_s']:.0f} | {ratio:.2f}x | {r['first_s']:.1f} |")
    print(
        f"| 2 threads against 1 (fp32 eager) | 2 | {base[2]:.0f} | {base[2] / base[1]:.2f}x of 1 thread | |"
    )
    sweep = f"{both / base[2]:.2f}x of 1 experiment of 2 threads"
    print(f"| sweep: 2 experiments of 1 thread, at once | 1+1 | {both:.0f} | {sweep} | |")
    if args.compile:
        for threads in (1, 2):
            compiled = {r["bits"] for r in runs[("fp32 compiled", threads)]}
            eager = {r["bits"] for r in runs[("fp32 eager, channels-last", threads)]}
            print(f"\ncompiled, {threads} thread(s): {len(runs[('fp32 compiled', threads)])} runs "
                  f"{'bit-identical' if len(compiled) == 1 else 'with different bits'}; eager runs "
                  f"{'bit-identical' if len(eager) == 1 else 'with different bits'}; compiled against eager: "
                  f"{'the same bits' if compiled == eager else 'other bits'}")  # fmt: skip


if __name__ == "__main__":
    main()
