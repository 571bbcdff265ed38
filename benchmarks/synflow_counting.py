"""How much SynFlow's final mask depends on its counting rule: one weight more per round.

SynFlow prunes in `prune.synflow.iters` rounds (100, as the original) on an exponential schedule, each
round pruning round(s_e × N) weights. A different but equally defensible rule (floor instead of
round, or sparsity counted over another set of layers) moves each intermediate round by about one
weight. This script prunes once with the schedule as it is and once with one weight more pruned in
every round but the last (which stays exact), and reports how many of the kept weights differ.

Usage: python -m benchmarks.synflow_counting [--arch resnet20] [--width 16] [--shape 1 8 8]
Prints a markdown table; nothing is asserted.
"""

from __future__ import annotations

import argparse

import torch

from tost.models import build
from tost.sparsity.mask import Mask, prunable
from tost.sparsity.methods import synflow
from tost.sparsity.schedule import select


def synflow_mask(net: torch.nn.Module, schedule: list[float], shape: tuple[int, ...]) -> Mask:
    """SynFlow's loop (`synflow.find_mask`) with an explicit per-round sparsity schedule."""
    lin = synflow.linearised(net)
    weights = prunable(lin)
    dense = {n: w.detach().clone() for n, w in weights.items()}
    mask = None
    for s in schedule:
        if mask is not None:
            with torch.no_grad():
                for n, w in weights.items():
                    w.copy_(dense[n] * mask.tensors[n])
        mask = select(synflow.synflow_scores(lin, weights, shape), s, "global", previous=mask)
    assert mask is not None
    return mask


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", default="resnet20")
    ap.add_argument("--width", type=int, default=16)
    ap.add_argument("--shape", type=int, nargs=3, default=[1, 8, 8])
    ap.add_argument("--iters", type=int, default=100)
    ap.add_argument("--sparsities", type=float, nargs="+", default=[0.9, 0.95, 0.98])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    args = ap.parse_args()
    shape = tuple(args.shape)
    print(f"# {args.arch} width {args.width}, input {shape}, {args.iters} rounds, global scope\n")
    print("| sparsity | seed | kept weights | kept weights that differ | share |")
    print("|---:|---:|---:|---:|---:|")
    for sparsity in args.sparsities:
        for seed in args.seeds:
            torch.manual_seed(seed)
            net = build(args.arch, 10, shape, args.width)
            total = sum(w.numel() for w in prunable(net).values())
            base = synflow.density_schedule(sparsity, args.iters)
            plus_one = [min(s + 1.0 / total, sparsity) for s in base[:-1]] + [base[-1]]
            a, b = synflow_mask(net, base, shape), synflow_mask(net, plus_one, shape)
            kept = a.stats().kept
            differ = sum(int((a.tensors[n] & ~b.tensors[n]).sum()) for n in a.tensors)
            print(f"| {sparsity:g} | {seed} | {kept} | {differ} | {100 * differ / kept:.2f} % |", flush=True)


if __name__ == "__main__":
    main()
