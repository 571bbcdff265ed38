"""DVC stage `mask`: the dense initialisation (init.pt) and the mask found on it (mask.pt)."""

import argparse
import dataclasses
import itertools
import logging
import time
from pathlib import Path

import torch

from stages._common import PARAMS, build_model, run_stage
from tost import config, data
from tost.io import save_tensors, write_json
from tost.runtime import Runtime, seed_everything
from tost.sparsity.methods import METHODS
from tost.sparsity.methods.base import PruneContext
from tost.train import fit, make_loaders

log = logging.getLogger("stages.mask")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    for name in ("data", "mask", "init", "metrics"):
        ap.add_argument(f"--{name}", type=Path, required=True)
    args = ap.parse_args(argv)
    p = config.load(PARAMS)
    rt = Runtime.detect(p.train.device, p.train.amp, p.train.channels_last, p.train.compile)
    seed_everything(p.seed)
    prepared = data.load_prepared(args.data)
    model = build_model(p, prepared.num_classes, prepared.shape)
    init = {k: v.clone() for k, v in model.state_dict().items()}
    prune_train = dataclasses.replace(p.train, batch_size=p.prune.batch_size)
    train_loader, _, _ = make_loaders(prepared, p.data, prune_train, rt, p.seed)
    generator = torch.Generator().manual_seed(p.seed)

    def train_fn(net, mask, epochs, name, on_epoch_end=None):  # noqa: ANN001, ANN202
        cfg = dataclasses.replace(p.train, epochs=epochs)
        return fit(net, mask, prepared, p.data, cfg, [], rt, p.seed, name=name, on_epoch_end=on_epoch_end)

    ctx = PruneContext(
        model=model.to(rt.device),
        sparsity=p.prune.sparsity,
        rounds=p.prune.rounds,
        scope=p.prune.scope,
        include_first=p.prune.include_first,
        include_last=p.prune.include_last,
        batches=lambda: itertools.islice(train_loader, p.prune.batches),  # prune.batches of them
        generator=generator,
        device=rt.device,
        train=train_fn,
        pretrain_epochs=p.prune.pretrain_epochs,
        input_shape=prepared.shape,
        path=p.prune.path,
    )
    start = time.perf_counter()
    mask = METHODS[p.prune.method].find_mask(ctx, p.prune_options.get(p.prune.method))
    seconds = time.perf_counter() - start
    mask.check(ctx.weights(), source="the new mask")
    stats = mask.stats()
    meta = {"method": p.prune.method, "arch": p.model.arch, "width": p.model.width, "scope": p.prune.scope}
    mask.save(args.mask, meta)
    if ctx.rewind_state is not None:  # lt with rewind_epoch > 0: sparse training starts from there
        init = {k: v.detach().to("cpu", copy=True) for k, v in ctx.rewind_state.items()}
    save_tensors(args.init, {"format": "tost-init/1", "arch": p.model.arch, "state_dict": init})
    write_json(
        args.metrics,
        {
            "method": p.prune.method,
            "requested_sparsity": p.prune.sparsity,
            "sparsity": stats.sparsity,
            "kept": stats.kept,
            "total": stats.total,
            "rounds": p.prune.rounds,
            "scope": p.prune.scope,
            "seconds": seconds,
            **ctx.info,
            "per_layer": stats.per_layer,
        },
    )
    log.info("mask: %s sparsity %.4f (requested %.4f) in %.2fs", p.prune.method, stats.sparsity,
             p.prune.sparsity, seconds)  # fmt: skip


if __name__ == "__main__":
    run_stage(main)
