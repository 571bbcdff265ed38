"""DVCLive for the training stages: each epoch's numbers where DVC's tools look for a running experiment.

Stage glue, not library: `tost` knows nothing of DVC. The stage's headline metrics stay where they
were; the live file (`metrics/live/<stage>/metrics.json`, declared in dvc.yaml) holds the latest
epoch, rewritten after every one, so a watcher sees how far training is and how long it has left.
Only three scalars are logged (no DVCLive plots, report or experiment of its own): the curves are the
report's, and the experiment is the one `dvc exp run` makes.
"""

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from tost.train import Trainer

LIVE = Path("metrics/live")


@contextmanager
def live(stage: str, writes: bool = True) -> Iterator[Callable[[Trainer], None]]:
    """An `on_epoch_end` hook that logs each epoch to `metrics/live/<stage>`.

    The keys are `live.<name>.epoch`, `.val_acc` and `.eta_s` (`<name>`: the variant, or `dense`):
    unique over all metrics files, so `dvc exp show` names them so, not by their path, and one
    `--drop` regex (`live[.]`) keeps them. It does nothing unless `writes`: in a distributed run rank 0
    alone writes.
    """
    if not writes:
        yield lambda trainer: None
        return
    from dvclive import Live  # imported here: only stages that train pay for it

    name = f"live/{Path(stage).name}"
    with Live(str(LIVE / stage), save_dvc_exp=False, dvcyaml=None, report=None) as log:

        def epoch_end(trainer: Trainer) -> None:
            row = trainer.history[-1]
            log.step = int(row["epoch"])
            log.log_metric(f"{name}/epoch", int(row["epoch"]), plot=False)
            log.log_metric(f"{name}/val_acc", round(float(row["val_acc"]), 2), plot=False)
            log.log_metric(f"{name}/eta_s", round(trainer.eta()), plot=False)
            log.next_step()

        yield epoch_end
