"""DVC stage `mask`: the mask found on the dense stage's initialisation, and where sparse training starts.

It reads the `dense` stage's folder (init.pt, and trained.pt when `dense.epochs` > 0) and writes
mask.pt, init.pt (the initialisation, or lt's rewind point) and metrics/mask.json. With `--resume DIR`,
methods that train (gmp, lt) keep their progress in DIR after every epoch and every lt round; a rerun
after a kill continues from there and ends with the same outputs. DIR is emptied once they are written.
"""

import argparse
from pathlib import Path

from stages._common import PARAMS, data_files, run_stage
from stages._device import runtime
from tost import config, data, metrics, models
from tost.io import save_tensors
from tost.prune import find
from tost.resume import ResumeDir, run_identity
from tost.runtime import seed_everything

SECTIONS = ("seed", "data", "model", "dense", "prune", "prune_options", "train")  # what the mask depends on
NOT_READ = ("train.epochs", "train.nproc")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    for name in ("data", "dense", "mask", "init", "metrics", "detail"):
        ap.add_argument(f"--{name}", type=Path, required=True)
    ap.add_argument("--resume", type=Path, help="folder for resume files (kept outside DVC's outs)")
    args = ap.parse_args(argv)
    p = config.load(PARAMS)
    rt = runtime(p.train)
    prepared = data.load_prepared(args.data)
    seed_everything(p.seed)  # as the dense stage did before it built the init
    model, trained = (
        models.from_file(args.dense / f, p.model, prepared.num_classes, prepared.shape) if f else None
        for f in ("init.pt", "trained.pt" if p.dense.epochs > 0 else None)
    )
    resume = None
    if args.resume is not None:  # resume files of any other run (params or inputs) are ignored
        inputs = [*data_files(args.data), args.dense / "init.pt"]
        resume = ResumeDir(args.resume, run_identity(p, SECTIONS, inputs, exclude=NOT_READ))
    found = find(p, prepared, model, rt, resume, trained)
    meta = {"method": p.prune.method, "arch": p.model.arch, "width": p.model.width, "scope": p.prune.scope}
    found.mask.save(args.mask, meta)
    save_tensors(args.init, {"format": "tost-init/1", "arch": p.model.arch, "state_dict": found.init})
    metrics.write({**found.metrics, "machine": rt.machine()}, metrics.MASK, args.metrics, args.detail)
    if resume is not None:
        resume.clear()  # after the outputs: a kill before this line reruns from the finished state


if __name__ == "__main__":
    run_stage(main)
