"""DVC stage `dense`: the initialisation (init.pt) and, for `dense.epochs` > 0, that network trained dense.

Its params leave out `prune`, so DVC's run-cache gives every sparsity, method and queued experiment
with the same seed, data, model and train settings the cached network instead of training it again.
"""

import argparse
from pathlib import Path

from stages._common import PARAMS, data_files, run_stage
from stages._device import runtime
from stages._live import live
from tost import config, data, dense, metrics, models
from tost.resume import ResumeDir, run_identity
from tost.sparsity.mask import measured_stats, prunable


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    for name in ("data", "out", "metrics", "detail"):
        ap.add_argument(f"--{name}", type=Path, required=True)
    ap.add_argument("--resume", type=Path, help="folder for the resume file (kept outside DVC's outs)")
    args = ap.parse_args(argv)
    p = config.load(PARAMS)
    rt = runtime(p.train)
    prepared = data.load_prepared(args.data)
    model = dense.initial(p, prepared)
    models.to_file(args.out / "init.pt", model, p.model, "init")
    trained = args.out / "trained.pt"
    record = {"epochs": p.dense.epochs, "weights": measured_stats(prunable(model, True, True)).total}
    record["machine"] = rt.machine()
    resume = None
    with live("dense") as log:  # entered even with no epochs: dvc.yaml declares its file an output
        if p.dense.epochs == 0:
            trained.unlink(missing_ok=True)  # no dense network: the methods prune the initialisation
        else:
            identity = run_identity(p, dense.SECTIONS, data_files(args.data), exclude=dense.NOT_READ)
            resume = ResumeDir(args.resume, identity) if args.resume else None
            result = dense.fit(p, prepared, model, rt, resume, discard=False, on_epoch_end=log)
            models.to_file(trained, result.model, p.model, "checkpoint", variant="dense")
            record.update(result.summary)
    metrics.write(record, metrics.DENSE, args.metrics, args.detail)
    if resume is not None:
        resume.discard(dense.NAME)  # after the outputs: a kill before this line resumes, loses nothing


if __name__ == "__main__":
    run_stage(main)
