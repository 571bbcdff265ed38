"""A resumed run of every variant ends as the uninterrupted run does, bit for bit on the CPU.

Six epochs. With the default windows (0.3 to 0.5 of the run) the tricks are at their start values
through epoch 1, inside their windows at epoch 2 (blend, decaying gate), done from epoch 3 (pure
ReLU, jumps skipped). A run is stopped after 1, 2, 3 or 4 finished epochs (before the windows, at
their start, after the epoch inside them, after them), its resume file of that epoch kept, and a
fresh Trainer continues from it. The fifth point is a resume file of the final epoch (what a kill
between the last save and the stage's outputs leaves when every epoch is saved): the rerun has no
epoch left and goes straight to `finish`, which must decide from the last epoch's trick state, not
the tricks' starting one. With windows that run to the end (the original's schedule, `upstream`),
the tricks are on throughout and stay in the network that `finish` returns.
"""

from __future__ import annotations

import pytest
import torch

from tests.conftest import variant_trainer
from tests.params_helpers import TO_THE_END
from tost.resume import ResumeDir
from tost.train import FitResult, Trainer

VARIANTS = ["baseline", "soft_act", "ghost_skip", "label_smooth", "lrsi", "tost"]
EPOCHS = 6
POINTS = {"before-the-windows": 1, "entering-the-windows": 2, "inside-the-windows": 3, "after-the-windows": 4,
          "after-the-last-epoch": 6}  # fmt: skip
WINDOWED = ["soft_act", "ghost_skip", "label_smooth", "tost"]  # the variants whose tricks have windows
TIMING = {"train_seconds", "images_per_s", "lrsi_seconds", "wall_seconds", "checkpoint_seconds"}


class Stop(Exception):
    """A kill after an epoch's resume file was written."""


def trainer(variant: str, tricks: dict | None = None) -> Trainer:
    return variant_trainer(variant, variant, tricks=tricks, epochs=EPOCHS, batch_size=32, eval_batch_size=64,
                           lr=0.05, checkpoint_every=1)  # fmt: skip


def stopped_after(variant: str, epochs: int, resume: ResumeDir, tricks: dict | None = None) -> None:
    """Train until `epochs` are finished and saved, then stop as a kill would."""
    t = trainer(variant, tricks)
    if epochs == EPOCHS:  # every epoch run, the last one saved, `finish` never reached
        while t.epoch < EPOCHS:
            t.run_epoch()
        resume.save(t.name, t.state())
        return

    def stop(tr: Trainer) -> None:  # runs before the epoch's save: stop one epoch later
        if tr.epoch == epochs + 1:
            raise Stop

    with pytest.raises(Stop):
        t.fit(resume, stop)
    assert resume.load(t.name)["epoch"] == epochs


def same(a: FitResult, b: FitResult) -> None:
    assert [type(m).__name__ for m in a.model.modules()] == [type(m).__name__ for m in b.model.modules()]
    sa, sb = a.model.state_dict(), b.model.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k
    assert untimed(a.summary) == untimed(b.summary)
    assert [untimed(r) for r in a.history] == [untimed(r) for r in b.history]


def untimed(record: dict) -> dict:
    return {k: v for k, v in record.items() if k not in TIMING | {"seconds"}}


@pytest.fixture(scope="module")
def uninterrupted() -> dict[str, FitResult]:
    return {v: trainer(v).fit() for v in VARIANTS}


@pytest.fixture(scope="module")
def uninterrupted_to_the_end() -> dict[str, FitResult]:
    return {v: trainer(v, TO_THE_END).fit() for v in WINDOWED}


@pytest.mark.parametrize("point", list(POINTS))
@pytest.mark.parametrize("variant", VARIANTS)
def test_a_resumed_run_ends_as_the_uninterrupted_one(tmp_path, uninterrupted, variant, point):
    resume = ResumeDir(tmp_path, "run")
    stopped_after(variant, POINTS[point], resume)
    again = trainer(variant)
    result = again.fit(resume)
    same(result, uninterrupted[variant])


@pytest.mark.parametrize("point", ["inside-the-windows", "after-the-last-epoch"])
@pytest.mark.parametrize("variant", WINDOWED)
def test_tricks_kept_to_the_end_resume_to_the_uninterrupted_network(
    tmp_path, uninterrupted_to_the_end, variant, point
):
    resume = ResumeDir(tmp_path, "run")
    stopped_after(variant, POINTS[point], resume, TO_THE_END)
    result = trainer(variant, TO_THE_END).fit(resume)
    same(result, uninterrupted_to_the_end[variant])
    types = {type(m).__name__ for m in result.model.modules()}
    kept = {"soft_act": {"BlendAct"}, "ghost_skip": {"Ghosts"}, "label_smooth": set(),
            "tost": {"BlendAct", "Ghosts"}}  # fmt: skip
    assert types & {"BlendAct", "Ghosts"} == kept[variant]  # what the tricks leave in the returned network
