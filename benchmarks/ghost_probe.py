"""Why ghost skips cost accuracy: how much the network leans on the jumps, and what dropping them does.

Trains one `ghost_skip` run (params.yaml plus `--preset`s, one seed, the mask of `--method` at
`--sparsity`) with the trick's own schedule and, after every epoch, measures on the validation split:

- `jump / main`: the mean over jump sites of ‖g·jump(x)‖ / ‖BN(conv(x))‖, the jump's size against the
  path it is added to (the 1e-4 fill is undone by the jump's own BatchNorm, which scales its output
  to unit variance);
- `val`: validation accuracy as trained, and `val, jumps off`: the same weights with the jumps
  skipped, which is what the network keeps when the gate closes at once.

Usage: python -m benchmarks.ghost_probe --preset fashion --preset fashion-cpu [--method random]
       [--sparsity 0.95] [--seed 0]
Prints a markdown table; nothing is asserted.
"""

from __future__ import annotations

import argparse

import torch
import yaml
from torch import nn

from sweep import plan
from tost import config, dense
from tost.datasets.split import prepare
from tost.prune import find
from tost.runtime import Runtime
from tost.train import Trainer
from tost.tricks import build_variant
from tost.tricks.ghost_skip import jump_sites


@torch.no_grad()
def jump_share(model: nn.Module, x: torch.Tensor) -> float:
    """Mean over sites of ‖g·jump(x)‖ / ‖BN(conv(x))‖, both as the site computes them (eval mode)."""
    ghosts, seen, handles = model.ghost_skip, {}, []

    def record(key: tuple[str, str]):  # noqa: ANN202 - a forward hook that keeps the output's norm
        return lambda _m, _a, out: seen.__setitem__(key, out.detach().norm())

    for name, _conv, bn in jump_sites(model):
        jump = ghosts.jumps[name.replace(".", "__")]
        handles.append(
            bn.register_forward_hook(record((name, "main")), prepend=True)
        )  # before the jump's sum
        handles.append(jump.register_forward_hook(record((name, "jump"))))
    model.eval()
    model(x)
    for h in handles:
        h.remove()
    gate = float(ghosts.gate)
    ratios = [
        gate * float(seen[(n, "jump")] / seen[(n, "main")])
        for n, _, _ in jump_sites(model)
        if (n, "jump") in seen
    ]
    return sum(ratios) / len(ratios) if ratios else 0.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", action="append", default=[])
    ap.add_argument("--method", default="random")
    ap.add_argument("--sparsity", type=float, default=0.95)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    with open("params.yaml", encoding="utf-8") as f:
        raw = plan.apply_presets(yaml.safe_load(f), args.preset)
    raw = plan.override(
        raw, {"prune.method": args.method, "prune.sparsity": args.sparsity, "seed": args.seed}, "probe"
    )
    p = config.parse(raw)
    rt = Runtime.from_config(p.train)
    prepared = prepare(p.data, p.seed)
    model = dense.initial(p, prepared)
    trained = dense.fit(p, prepared, dense.initial(p, prepared), rt).model if p.dense.epochs else None
    found = find(p, prepared, model, rt, trained=trained)
    model.load_state_dict(found.init)
    trainer = Trainer(
        model,
        found.mask,
        prepared,
        p.data,
        p.train,
        build_variant("ghost_skip", p.tricks.options),
        rt,
        p.seed,
    )
    x, _ = next(iter(trainer.val_loader))
    o = p.tricks.options["ghost_skip"]
    setting = f"{p.model.arch} width {p.model.width} on {p.data.name}, {p.train.epochs} epochs"
    mask = f"{args.method} at {args.sparsity}, seed {args.seed}"
    print(f"# ghost_skip (window {o.start}-{o.end}, fill {o.init}), {setting}, {mask}\n")
    print("| epoch | gate | jump / main | val (%) | val, jumps off (%) |")
    print("|---:|---:|---:|---:|---:|")
    print(f"| 0 | 1.00 | {jump_share(trainer.model, x):.2f} | | |", flush=True)
    val = trainer.evaluations[0]
    while trainer.epoch < p.train.epochs:
        row = trainer.run_epoch()
        ghosts = trainer.model.ghost_skip
        share = jump_share(trainer.model, x) if ghosts.active else 0.0
        active = ghosts.active
        ghosts.active = False
        off = val(("probe", trainer.epoch))[1]
        ghosts.active = active
        gate = float(ghosts.gate)
        print(
            f"| {trainer.epoch} | {gate:.2f} | {share:.2f} | {row['val_acc']:.1f} | {off:.1f} |", flush=True
        )
    return None


if __name__ == "__main__":
    main()
