"""Where the sweep's missing experiments run: DVC's local queue (the default) or SLURM (`sweep.slurm`).

Both take the same order (these experiments, by name, with these `-S` overrides) and give the same
answer (which of them failed, and where to read why). Either way each experiment is an ordinary DVC
experiment of this checkout, so the table is read back from `dvc exp show` whichever ran it.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from stages import _slots as slots
from sweep import dvc

log = logging.getLogger("sweep")
NO_PATH = "leaves no path from input to output"  # in the mask stage's error (tost.prune.check_collapse)


@dataclass(frozen=True)
class Order:
    """One experiment to run: its name, its `-S` overrides, and what it shares with other orders."""

    name: str
    set_args: tuple[str, ...]
    lead: bool = False  # first of its seed: the others of that seed wait for its dense network


@dataclass(frozen=True)
class Failure:
    """An experiment that did not finish, with what a user needs to find out why."""

    name: str
    job: str  # "SLURM job 12_3", or the DVC queue
    state: str  # as the executor reports it: FAILED (exit 1), CANCELLED, TIMEOUT, Failed, ...
    log: str  # a path, or the command that prints the log
    last_line: str

    def line(self) -> str:
        return f"{self.name}: {self.job} {self.state}; log {self.log}: {self.last_line}"

    @property
    def cut(self) -> bool:
        """Its mask leaves no path from input to output (`tost.prune`): a result, not a fault."""
        return NO_PATH in self.last_line


class Executor(Protocol):
    """Runs experiments that are not finished yet and waits for all of them."""

    def run(self, orders: Sequence[Order]) -> list[Failure]: ...


def cores() -> int:
    """The CPUs this process may run on (its affinity, which SLURM and containers narrow)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def default_jobs(threads: int, available: int) -> int:
    """`report.jobs: 0`: as many experiments at once as the cores give `train.threads` each."""
    return max(1, available // threads)


def worker_env(jobs: int, per_gpu: int) -> dict[str, str]:
    """Let each parallel experiment claim a GPU slot (`stages._slots`); threads are `train.threads`.

    DVC starts its second and later queue workers as `dvc` found on PATH: without this environment's
    bin folder there, only one worker ever runs, whatever `-j` says.
    """
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env.setdefault(slots.LOCK_DIR, str(Path(".dvc/tmp/tost-gpu-slots").resolve()))
    env.setdefault(slots.PER_GPU, str(per_gpu))
    return env


@dataclass
class LocalQueue:
    """DVC's own queue on this machine: `dvc exp run --queue`, `dvc queue start -j jobs`, wait."""

    jobs: int
    per_gpu: int
    poll: float = 10.0
    run_dvc: Callable[..., str] = dvc.run_dvc  # (args, env=None) -> stdout
    start: Callable[..., None] = dvc.start_queue  # (jobs, env=...)
    sleep: Callable[[float], None] = time.sleep

    def run(self, orders: Sequence[Order]) -> list[Failure]:
        existing = {e.name for e in dvc.experiments(self.run_dvc)}
        pending = dvc.enqueue(self.run_dvc, {o.name: list(o.set_args) for o in orders}, existing)
        env = worker_env(self.jobs, self.per_gpu)
        self.start(self.jobs, env=env)
        restart = lambda: self.start(self.jobs, env=env)  # noqa: E731
        final = dvc.wait(lambda a: self.run_dvc(a, env=env), pending, self.poll, self.sleep, restart)
        return [self._failure(name) for name, state in final.items() if state == "Failed"]

    def _failure(self, name: str) -> Failure:
        try:
            last = dvc.why(self.run_dvc(["queue", "logs", name]))
        except Exception as err:  # the failure is reported either way
            last = f"(log not readable: {err})"
        return Failure(name, "DVC queue task", "Failed", f"`dvc queue logs {name}`", last)
