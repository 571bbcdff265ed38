"""DVC stage `train@<variant>`: train the masked network from init.pt with one set of tricks.

With `train.nproc > 1` it runs itself again under torchrun (`tost.distributed`); each worker trains
its shard, and rank 0 alone writes the checkpoint, metrics, curve and resume file.
"""

import argparse
import logging
from pathlib import Path

from stages._common import PARAMS, data_files, run_stage
from stages._live import live
from stages._torchrun import launched
from tost import config, data, distributed, metrics, models, tricks
from tost.io import write_csv
from tost.resume import ResumeDir, run_identity
from tost.runtime import seed_everything
from tost.sparsity.mask import Mask
from tost.train import Trainer

SECTIONS = ("seed", "data", "model", "train")  # with the variant's tricks, the mask and init: the run


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("variant")
    for name in ("data", "mask", "init", "ckpt", "metrics", "detail", "curve", "resume"):
        ap.add_argument(f"--{name}", type=Path, required=name != "resume")
    args = ap.parse_args(argv)
    p = config.load(PARAMS)
    variant = p.tricks.listed(args.variant)
    if (started := launched(p.train, "stages.train", argv)) is None:
        return None  # it ran again under torchrun, whose workers did the work
    launch, rt = started
    with distributed.process_group(rt, launch) as rt:
        logging.getLogger().setLevel(logging.INFO if rt.rank == 0 else logging.WARNING)  # rank 0 reports
        seed_everything(p.seed)
        prepared = data.load_prepared(args.data)
        model = models.from_file(args.init, p.model, prepared.num_classes, prepared.shape)
        uses = {"variant": variant, "tricks": tricks.used_options(variant, p.tricks.options)}
        run = run_identity(p, SECTIONS, [*data_files(args.data), args.mask, args.init], uses)
        resume = ResumeDir(args.resume, run) if args.resume else None
        used = tricks.build_variant(variant, p.tricks.options)
        trainer = Trainer(model, Mask.load(args.mask)[0], prepared, p.data, p.train, used, rt, p.seed,
                          name=f"train[{variant}]")  # fmt: skip
        with live(f"train/{variant}", rt.rank == 0) as log:
            result = trainer.fit(resume, log, discard=False)
        if rt.rank == 0:
            kept = tricks.kept(variant, used)  # tricks still on in the last epoch stay in the network
            models.to_file(args.ckpt, result.model, p.model, "checkpoint", kept=kept, variant=variant)
            record = {"variant": variant, **result.summary, "machine": rt.machine()}
            metrics.write(record, metrics.TRAIN, args.metrics, args.detail)
            write_csv(args.curve, result.history)
            if resume is not None:  # after the outputs: a kill before this line resumes instead
                resume.discard(trainer.name)


if __name__ == "__main__":
    run_stage(main)
