"""DVC stage `mask`: the dense initialisation (init.pt) and the mask found on it (mask.pt).

With `--resume DIR`, methods that train (magnitude, gmp, lt) keep their progress in DIR after every
epoch and every lt round; a rerun after a kill continues from there and ends with the same mask, init
and metrics. DIR is emptied once the outputs are written.
"""

import argparse
import dataclasses
import itertools
import logging
import time
from pathlib import Path

import torch

from stages._common import PARAMS, build_model, fingerprint, run_stage
from tost import config, data
from tost.errors import ConfigError
from tost.io import save_tensors, write_json
from tost.resume import ResumeDir
from tost.runtime import Runtime, seed_everything
from tost.sparsity.methods import METHODS
from tost.sparsity.methods.base import PruneContext
from tost.train import fit, make_loaders

log = logging.getLogger("stages.mask")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    for name in ("data", "mask", "init", "metrics"):
        ap.add_argument(f"--{name}", type=Path, required=True)
    ap.add_argument("--resume", type=Path, help="folder for resume files (kept outside DVC's outs)")
    args = ap.parse_args(argv)
    p = config.load(PARAMS)
    rt = Runtime.detect(
        p.train.device, p.train.amp, p.train.channels_last, p.train.compile, cpu_amp=p.train.cpu_amp
    )
    seed_everything(p.seed)
    prepared = data.load_prepared(args.data)
    model = build_model(p, prepared.num_classes, prepared.shape)
    init = {k: v.clone() for k, v in model.state_dict().items()}
    if p.prune.batch_size > prepared.train.y.numel():  # else the loader would blame train.batch_size
        raise ConfigError(
            f"params.yaml: prune.batch_size={p.prune.batch_size} is larger than the training split "
            f"({prepared.train.y.numel()} images); lower it"
        )
    resume = None
    if args.resume is not None:  # this run's params and data: resume files of any other run are ignored
        used = repr((p.seed, p.data, p.model, p.prune, p.prune_options, p.train))  # frozen dataclasses
        inputs = sorted(f for f in args.data.iterdir() if f.is_file())
        resume = ResumeDir(args.resume, fingerprint({"mask": used}, inputs))
    prune_train = dataclasses.replace(p.train, batch_size=p.prune.batch_size)
    train_loader, _, _ = make_loaders(prepared, p.data, prune_train, rt, p.seed)
    generator = torch.Generator().manual_seed(p.seed)

    def train_fn(net, mask, epochs, name, on_epoch_end=None):  # noqa: ANN001, ANN202
        cfg = dataclasses.replace(p.train, epochs=epochs)
        return fit(
            net, mask, prepared, p.data, cfg, [], rt, p.seed, name=name, on_epoch_end=on_epoch_end,
            resume=resume.path(name) if resume else None, fingerprint=resume.fingerprint if resume else "",
        )  # fmt: skip

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
        resume=resume,
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
    if resume is not None:
        resume.clear()  # after the outputs: a kill before this line reruns from the finished state
    log.info("mask: %s sparsity %.4f (requested %.4f) in %.2fs", p.prune.method, stats.sparsity,
             p.prune.sparsity, seconds)  # fmt: skip


if __name__ == "__main__":
    run_stage(main)
