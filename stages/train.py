"""DVC stage `train@<variant>`: train the masked network from init.pt with one set of tricks.

With `train.nproc > 1` it runs itself again under torchrun (`tost.distributed`); each worker trains
its shard, and rank 0 alone writes the checkpoint, metrics, curve and resume file.
"""

import argparse
import dataclasses
import logging
import sys
from pathlib import Path

import pandas as pd

from stages._common import PARAMS, build_model, fingerprint, load_weights, run_stage
from tost import config, data, distributed, train
from tost.io import load_tensors, save_tensors, write_json, write_text
from tost.runtime import Runtime, seed_everything
from tost.sparsity.mask import Mask
from tost.tricks import build_variant

log = logging.getLogger("stages.train")


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("variant")
    for name in ("data", "mask", "init", "ckpt", "metrics", "curve", "resume"):
        ap.add_argument(f"--{name}", type=Path, required=name != "resume")
    args = ap.parse_args(argv)
    p = config.load(PARAMS)
    if args.variant not in p.tricks.run:
        raise config.ConfigError(
            f"tricks.run: variant {args.variant!r} is not listed in {list(p.tricks.run)}"
        )
    launch = distributed.from_env()
    nproc = p.train.nproc if launch is None else launch.local_world_size
    rt = Runtime.detect(
        p.train.device, p.train.amp, p.train.channels_last, p.train.compile, nproc, cpu_amp=p.train.cpu_amp
    )
    if launch is None and nproc > 1:
        distributed.relaunch(nproc, "stages.train", argv)
        return
    with distributed.process_group(rt, launch) as rt:
        if rt.rank > 0:  # one progress line per epoch, from rank 0
            logging.getLogger().setLevel(logging.WARNING)
        _train(args, p, rt)


def _train(args: argparse.Namespace, p: config.Params, rt: Runtime) -> None:
    seed_everything(p.seed)
    prepared = data.load_prepared(args.data)
    model = build_model(p, prepared.num_classes, prepared.shape)
    load_weights(model, load_tensors(args.init), args.init, p)
    mask, _ = Mask.load(args.mask)
    tricks = build_variant(args.variant, p.tricks.options)
    run_id = fingerprint(
        {"variant": args.variant, **{k: dataclasses.asdict(v) for k, v in
                                     (("data", p.data), ("model", p.model), ("train", p.train))},
         "tricks": {k: dataclasses.asdict(v) for k, v in p.tricks.options.items()}, "seed": p.seed},
        [args.mask, args.init],
    )  # fmt: skip
    result = train.fit(
        model, mask, prepared, p.data, p.train, tricks, rt, p.seed,
        name=f"train[{args.variant}]", resume=args.resume, fingerprint=run_id,
    )  # fmt: skip
    if rt.rank > 0:
        return
    state = {k: v.detach().cpu() for k, v in result.model.state_dict().items()}
    save_tensors(
        args.ckpt,
        {"format": "tost-checkpoint/1", "arch": p.model.arch, "width": p.model.width,
         "variant": args.variant, "state_dict": state},
    )  # fmt: skip
    write_json(args.metrics, {"variant": args.variant, **result.summary})
    write_text(args.curve, pd.DataFrame(result.history).to_csv(index=False, float_format="%.6g"))


if __name__ == "__main__":
    run_stage(main)
