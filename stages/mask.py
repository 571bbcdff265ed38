"""DVC stage `mask`: the dense initialisation (init.pt) and the mask found on it (mask.pt).

With `--resume DIR`, methods that train (magnitude, gmp, lt) keep their progress in DIR after every
epoch and every lt round; a rerun after a kill continues from there and ends with the same mask, init
and metrics. DIR is emptied once the outputs are written.
"""

import argparse
from pathlib import Path

from stages._common import PARAMS, run_stage, runtime
from tost import config, data, models
from tost.io import save_tensors, write_json
from tost.prune import find
from tost.resume import ResumeDir, run_identity
from tost.runtime import seed_everything

SECTIONS = ("seed", "data", "model", "prune", "prune_options", "train")  # what the mask depends on


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    for name in ("data", "mask", "init", "metrics"):
        ap.add_argument(f"--{name}", type=Path, required=True)
    ap.add_argument("--resume", type=Path, help="folder for resume files (kept outside DVC's outs)")
    args = ap.parse_args(argv)
    p = config.load(PARAMS)
    rt = runtime(p.train)
    seed_everything(p.seed)
    prepared = data.load_prepared(args.data)
    model = models.build(p.model.arch, prepared.num_classes, prepared.shape, p.model.width)
    resume = None
    if args.resume is not None:  # resume files of any other run (params or data) are ignored
        inputs = sorted(f for f in args.data.iterdir() if f.is_file())
        resume = ResumeDir(args.resume, run_identity(p, SECTIONS, inputs))
    found = find(p, prepared, model, rt, resume)
    found.mask.save(args.mask, {"method": p.prune.method, "arch": p.model.arch, "width": p.model.width,
                                "scope": p.prune.scope})  # fmt: skip
    save_tensors(args.init, {"format": "tost-init/1", "arch": p.model.arch, "state_dict": found.init})
    write_json(args.metrics, found.metrics)
    if resume is not None:
        resume.clear()  # after the outputs: a kill before this line reruns from the finished state


if __name__ == "__main__":
    run_stage(main)
