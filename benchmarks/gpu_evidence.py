"""Size the GPU evidence run to the time left: epochs of the `fashion-gpu` table that fit a budget.

`benchmarks/gpu_check.sh` ends with a real table on the full Fashion-MNIST (ResNet-20 width 16,
random and SNIP masks at 0.95 and 0.98, two seeds, all six variants: 8 experiments, 48 trainings),
and a lent GPU comes with minutes, not hours. This measures one epoch here (training on 54,000
Fashion-shaped images plus evaluating 16,000, the captured step if CUDA is there), estimates the
table's wall time for a number of epochs, prints the estimate, and writes the largest number of
epochs that fits as a preset (`train.epochs`, `dense.epochs: 0`) for `python -m sweep --preset`.

The estimate: experiments run `report.per_gpu` at a time on the one GPU, each slowed by the sharing
(`--share-slowdown`, aggregate throughput of small models on one GPU); every experiment also pays a
fixed cost for its stages' start-up, data, mask and analysis (`--stage-overhead`, seconds).

Usage: python -m benchmarks.gpu_evidence --budget SECONDS --preset-out FILE [--images 54000]
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import torch
import yaml

from tost import config
from tost.data import Prepared, Split
from tost.models import build
from tost.runtime import Runtime
from tost.sparsity.mask import Mask, prunable
from tost.train import Trainer

EXPERIMENTS, VARIANTS = 8, 6  # 2 methods x 2 sparsities x 2 seeds; every variant of tricks.run


def epoch_seconds(images: int, device: str, batch: int = 128, evaluated: int = 16_000) -> float:
    """Wall seconds of one epoch (train `images`, evaluate `evaluated`), after a first that captures."""
    raw = yaml.safe_load(Path("params.yaml").read_text(encoding="utf-8"))
    raw["train"].update(epochs=2, batch_size=batch, eval_batch_size=1024, device=device)
    p = config.parse(raw)
    g = torch.Generator().manual_seed(0)

    def split(n: int) -> Split:
        return Split(
            torch.randint(0, 256, (n, 1, 28, 28), generator=g, dtype=torch.uint8), torch.arange(n) % 10
        )

    val = evaluated * 3 // 8  # 6,000 and 10,000 of the default 16,000
    data = Prepared(split(images), split(val), split(evaluated - val), 10, (0.29,), (0.35,))
    torch.manual_seed(0)
    net = build("resnet20", 10, (1, 28, 28), 16)
    mask = Mask({n: torch.rand(w.shape, generator=g) >= 0.95 for n, w in prunable(net).items()})
    trainer = Trainer(net, mask, data, p.data, p.train, [], Runtime.from_config(p.train), 0, "estimate")
    trainer.run_epoch()  # warm-up and capture
    start = time.perf_counter()
    trainer.run_epoch()
    return time.perf_counter() - start


def table_seconds(epochs: int, epoch_s: float, per_gpu: int, slowdown: float, overhead: float) -> float:
    """Wall time of the table: rounds of `per_gpu` experiments, each six trainings plus its overhead."""
    rounds = math.ceil(EXPERIMENTS / per_gpu)
    return rounds * (VARIANTS * epochs * epoch_s * slowdown + overhead)


def fitting_epochs(budget: float, epoch_s: float, per_gpu: int, slowdown: float, overhead: float) -> int:
    """The most epochs whose estimated table time is within `budget` (0: not even one fits)."""
    epochs = 0
    while epochs < 200 and table_seconds(epochs + 1, epoch_s, per_gpu, slowdown, overhead) <= budget:
        epochs += 1
    return epochs


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--budget", type=float, required=True, help="seconds the table may take")
    ap.add_argument("--preset-out", required=True, help="where to write the epochs preset (YAML)")
    ap.add_argument("--images", type=int, default=54_000)
    ap.add_argument("--evaluated", type=int, default=16_000, help="val + test images evaluated per epoch")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--per-gpu", type=int, default=4)
    ap.add_argument("--share-slowdown", type=float, default=2.0, help="per-experiment slowdown when sharing")
    ap.add_argument(
        "--stage-overhead", type=float, default=70.0, help="seconds of stage start-ups per experiment"
    )
    args = ap.parse_args(argv)
    epoch_s = epoch_seconds(args.images, args.device, evaluated=args.evaluated)
    epochs = fitting_epochs(args.budget, epoch_s, args.per_gpu, args.share_slowdown, args.stage_overhead)
    estimate = table_seconds(max(epochs, 1), epoch_s, args.per_gpu, args.share_slowdown, args.stage_overhead)
    print(f"one epoch of {args.images} images plus {args.evaluated} evaluated: {epoch_s:.2f} s")
    print(f"estimate: {epochs} epochs -> {estimate:.0f} s for {EXPERIMENTS} experiments x {VARIANTS} "
          f"variants ({args.per_gpu} per GPU) within a budget of {args.budget:.0f} s")  # fmt: skip
    with open(args.preset_out, "w", encoding="utf-8") as f:
        yaml.safe_dump({"train": {"epochs": max(epochs, 1)}}, f)
    if epochs == 0:
        raise SystemExit("not even one epoch fits the budget: the table is skipped")


if __name__ == "__main__":
    main()
