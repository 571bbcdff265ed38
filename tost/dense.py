"""The dense network: built once from the seed, trained once, shared by every method that prunes it.

OMP (`magnitude`), Taylor (`taylor`), the first round of lottery tickets (`lt`) and the dense
reference row of the report all need the same thing: the seeded initialisation trained without a
mask for `dense.epochs` with the `train` settings. The `dense` stage computes it once; its params
leave out `prune` (and `train.epochs`, `train.nproc`), so DVC's run-cache hands the cached network to
every experiment that shares them, across sparsities, methods and queued experiments.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from torch import nn

from tost import models
from tost.config import Params
from tost.data import Prepared
from tost.resume import ResumeDir
from tost.runtime import Runtime, seed_everything
from tost.sparsity.mask import Mask, prunable
from tost.train import FitResult, Trainer

# The params a dense network depends on, as `run_identity` sections and dotted exclusions.
SECTIONS = ("seed", "data", "model", "dense", "train")
NOT_READ = ("train.epochs", "train.nproc")
NAME = "dense"  # the run's name: its progress lines and its resume file


def initial(p: Params, prepared: Prepared) -> nn.Module:
    """The seeded initialisation: the same seed always builds the same weights."""
    seed_everything(p.seed)
    return models.build(p.model.arch, prepared.num_classes, prepared.shape, p.model.width)


def fit(
    p: Params,
    prepared: Prepared,
    model: nn.Module,
    rt: Runtime,
    resume: ResumeDir | None = None,
    discard: bool = True,
    on_epoch_end: Callable[[Trainer], None] | None = None,
) -> FitResult:
    """Train `model` without a mask for `dense.epochs` epochs with the train stage's loop and settings.

    `discard=False` keeps the resume file for the stage to delete once its outputs are written;
    `on_epoch_end` is `Trainer.fit`'s (the stage logs each epoch live with it).
    """
    cfg = dataclasses.replace(p.train, epochs=p.dense.epochs)
    trainer = Trainer(model, Mask.ones(prunable(model)), prepared, p.data, cfg, [], rt, p.seed, NAME)
    return trainer.fit(resume, on_epoch_end, discard=discard)
