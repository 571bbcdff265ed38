"""Ops one training step computes, by part: what a captured CUDA graph launches as kernels.

On a GPU a small network's step is launch-bound, so the number of ops is the cost to watch. A
`TorchDispatchMode` counts every aten op of `Trainer._graph_step` (the function a CUDA graph
captures) that computes something (views, empty allocations and dtype queries are not counted),
after one warm step so that the momentum buffers exist, and attributes it to the part of
the step that issued it: the optimizer (`sgd_step`), the mask (`Enforcer`), the epoch sums
(`EpochSums.record`), or forward+backward (everything else: batch gather and augmentation, forward,
loss, backward). It runs on the CPU: the ops, not their speed, are what it measures.

Usage: python -m benchmarks.step_ops [--variant baseline] [--models resnet18 resnet20]
Prints one line per model (`resnet18: forward+backward N, optimizer N, mask N, sums N, total N`) and
the same as a markdown table; nothing is asserted.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import torch
import yaml
from torch.utils._python_dispatch import TorchDispatchMode

from tost import config, step
from tost import train as train_module
from tost.data import Prepared, Split
from tost.models import build
from tost.runtime import Runtime
from tost.sparsity.mask import Enforcer, Mask, prunable
from tost.train import Trainer
from tost.tricks import build_variant

PARAMS = Path(__file__).resolve().parents[1] / "params.yaml"
SHAPES = {"resnet18": ((3, 32, 32), 64), "resnet20": ((3, 32, 32), 16)}  # input, width (the paper's)
PARTS = ("forward+backward", "optimizer", "mask", "sums")


def launches(func: torch._ops.OpOverload) -> bool:
    """Whether an op computes something (a kernel on a GPU).

    It does when it writes into an argument (`add_`, `_foreach_mul_`) or returns a new tensor.
    Views (`detach`, `view`, `t`, ...), empty allocations and dtype queries are free in a captured
    graph and are not counted.
    """
    if func.namespace != "aten" or func.name().startswith("aten::empty"):
        return False
    schema = func._schema
    if any(a.alias_info is not None and a.alias_info.is_write for a in schema.arguments):
        return True
    tensors = [r for r in schema.returns if isinstance(r.type, torch.TensorType | torch.ListType)]
    return any(r.alias_info is None for r in tensors)


class Counting(TorchDispatchMode):
    """Counts every dispatched aten op under the part that is running."""

    def __init__(self) -> None:
        super().__init__()
        self.part = PARTS[0]
        self.counts: Counter[str] = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204 - torch's hook
        if launches(func):
            self.counts[self.part] += 1
        return func(*args, **(kwargs or {}))

    @contextlib.contextmanager
    def within(self, part: str) -> Iterator[None]:
        outer, self.part = self.part, part
        try:
            yield
        finally:
            self.part = outer


def trainer_for(arch: str, variant: str, batch: int) -> Trainer:
    """A 90 %-sparse `arch` on random CIFAR-shaped data, the repository's params otherwise."""
    shape, width = SHAPES[arch]
    raw = copy.deepcopy(yaml.safe_load(PARAMS.read_text(encoding="utf-8")))
    raw["model"].update(arch=arch, width=width)
    raw["train"].update(batch_size=batch, eval_batch_size=batch, epochs=10)
    raw["tricks"]["lrsi"]["iters"] = 1
    p = config.parse(raw)
    g = torch.Generator().manual_seed(0)

    def split(n: int) -> Split:
        return Split(torch.randint(0, 256, (n, *shape), generator=g, dtype=torch.uint8), torch.arange(n) % 10)

    data = Prepared(split(4 * batch), split(batch), split(batch), 10, (0.5,) * 3, (0.25,) * 3)
    torch.manual_seed(0)
    net = build(arch, 10, shape, width)
    mask = Mask({n: torch.rand(w.shape, generator=g) >= 0.9 for n, w in prunable(net).items()})
    tricks = build_variant(variant, p.tricks.options)
    return Trainer(net, mask, data, p.data, p.train, tricks, Runtime.cpu(), 0)


def count_step(trainer: Trainer, epoch: int = 3) -> Counter[str]:
    """The ops of one step at `epoch` (inside the tricks' windows for `tost`), by part."""
    for t in trainer.tricks:
        t.on_epoch_start(epoch, trainer.cfg.epochs, trainer.model)
    trainer.model.train()
    trainer.lr.fill_(0.05)
    idx, draws = next(iter(trainer.train_loader.plan()))
    trainer._graph_step(idx, *draws)  # the first step makes the momentum buffers
    counting = Counting()
    real_sgd, real_enforce, real_record = train_module.sgd_step, Enforcer.__call__, step.EpochSums.record

    def sgd(*a, **k):  # noqa: ANN002, ANN003, ANN202 - pass-through wrappers
        with counting.within("optimizer"):
            return real_sgd(*a, **k)

    def enforce(self, *a, **k):  # noqa: ANN001, ANN002, ANN003, ANN202
        with counting.within("mask"):
            return real_enforce(self, *a, **k)

    def record(self, *a, **k):  # noqa: ANN001, ANN002, ANN003, ANN202
        with counting.within("sums"):
            return real_record(self, *a, **k)

    train_module.sgd_step, Enforcer.__call__, step.EpochSums.record = sgd, enforce, record
    try:
        with counting:
            trainer._graph_step(idx, *draws)
    finally:
        train_module.sgd_step, Enforcer.__call__, step.EpochSums.record = real_sgd, real_enforce, real_record
    return counting.counts


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    ap.add_argument("--variant", default="baseline")
    ap.add_argument(
        "--batch", type=int, default=4, help="images per step (the op count does not depend on it)"
    )
    args = ap.parse_args(argv)
    rows = []
    for arch in args.models:
        counts = count_step(trainer_for(arch, args.variant, args.batch))
        total = sum(counts.values())
        print(f"{arch}: " + ", ".join(f"{part} {counts[part]}" for part in PARTS) + f", total {total}")
        rows.append((arch, *(counts[part] for part in PARTS), total))
    print(f"\n| model ({args.variant}) | " + " | ".join(PARTS) + " | total |")
    print("|---" * (len(PARTS) + 2) + "|")
    for row in rows:
        print("| " + " | ".join(str(v) for v in row) + " |")


if __name__ == "__main__":
    main()
