"""The SLURM executor: every missing experiment of the table becomes a task of a SLURM job array.

Plain `sbatch`/`squeue`/`scancel` rather than submitit: the job is a command line (`python -m
sweep.job`), not a pickled Python function, so nothing has to be serialisable, the compute nodes need
no package beyond the project's own environment, and the whole exchange with SLURM is three commands
that a user can run by hand to see what we see.

A submission lives in `.dvc/tmp/tost-slurm/<stamp>/` of the checkout (a shared file system on a
cluster): `spec.json` (what each task runs), `logs/` (SLURM's output per task), `cells/` (one log and
one result file per experiment, written by the job). Each task clones the checkout at the submitting
commit plus its uncommitted changes, runs `dvc exp run` there with the shared DVC cache, and pushes the
experiment back to the checkout (`sweep.job`): jobs never share a workspace.

Experiments that share a seed share the dense network, which DVC's run-cache hands from the first
experiment that trained it to the others. So the first experiment of each seed runs in a first array,
and the rest in a second that starts when the first has ended (`afterany`): the dense network of a
seed is trained once, however many jobs need it.

SLURM without accounting (no `sacct`) forgets a finished job after a few minutes and lists a task
cancelled while pending not at all, so the result files the jobs write are the record of success;
`squeue` supplies the states of what is still queued, running, or just ended.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from sweep.dvc import last_line, why
from sweep.executor import Failure, Order
from tost.config import SlurmConfig
from tost.errors import TostError

log = logging.getLogger("sweep")

Run = Callable[[Sequence[str]], subprocess.CompletedProcess]
QUEUED = {"PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "SUSPENDED", "RESV_DEL_HOLD", "CONFIGURING"}
RUNNING = {"RUNNING", "COMPLETING", "STAGE_OUT", "SIGNALING", "RESIZING", "STOPPED"}
STATES = ("queued", "running", "done", "failed")
GONE = "not in squeue (cancelled while pending?)"  # a task SLURM no longer lists and never saw end


def _run(cmd: Sequence[str]) -> subprocess.CompletedProcess:
    return subprocess.run(list(cmd), capture_output=True, text=True, check=False)


def with_cpus(cfg: SlurmConfig, threads: int, per_gpu: int) -> SlurmConfig:
    """`report.slurm.cpus: 0` resolved: `train.threads` for each experiment a job runs at once."""
    if cfg.cpus:
        return cfg
    return dataclasses.replace(cfg, cpus=threads * max(1, cfg.gpus * per_gpu))


def sbatch_options(cfg: SlurmConfig) -> list[str]:
    """The resource options every task of the sweep asks for; empty settings leave SLURM's defaults."""
    opts = [f"--cpus-per-task={cfg.cpus}"]
    if cfg.gpus:
        opts.append(f"--gres=gpu:{cfg.gpus}")  # --gres rather than --gpus: older SLURM releases know it
    named = {"partition": cfg.partition, "mem": cfg.mem, "time": cfg.time, "account": cfg.account}
    named |= {"qos": cfg.qos, "constraint": cfg.constraint}
    return opts + [f"--{key}={value}" for key, value in named.items() if value]


def chunks(orders: Sequence[Order], size: int) -> list[list[Order]]:
    """Orders in groups of `size`: one group per array task (a GPU job runs gpus × per_gpu cells)."""
    return [list(orders[i : i + size]) for i in range(0, len(orders), size)]


@dataclass
class Submission:
    """One sweep's jobs: which experiment is in which task, and what has been seen of them."""

    folder: Path
    tasks: dict[str, list[str]] = field(default_factory=dict)  # "12_0" -> experiment names
    jobs: list[str] = field(default_factory=list)  # array job ids, in submission order
    seen: dict[str, str] = field(default_factory=dict)  # task -> last state squeue gave
    missing: dict[str, int] = field(default_factory=dict)  # task -> polls it was absent for

    def task_of(self, name: str) -> str:
        return next(task for task, names in self.tasks.items() if name in names)


@dataclass
class Slurm:
    """Submits orders as SLURM job arrays from the checkout at `root`, waits, reports failures."""

    cfg: SlurmConfig
    per_gpu: int
    root: Path
    poll: float = 10.0
    run_cmd: Run = _run
    sleep: Callable[[float], None] = time.sleep

    def check(self) -> None:
        """Everything that can be known wrong before a job is submitted: missing commands, bad options."""
        for tool in ("sbatch", "squeue", "scancel"):
            if shutil.which(tool) is None:
                raise TostError(
                    f"executor slurm: `{tool}` is not on PATH; run the sweep on a SLURM login node, "
                    "or without --executor slurm"
                )
        proc = self.run_cmd(["sbatch", "--test-only", *sbatch_options(self.cfg), "--wrap=true"])
        if proc.returncode != 0:
            raise TostError(f"executor slurm: sbatch refuses params.yaml report.slurm: {_error(proc)}")
        if earlier := self.earlier_jobs():
            raise TostError(
                f"executor slurm: job(s) {', '.join(earlier)} of an earlier sweep of this checkout are still "
                "queued or running; wait for them (finished experiments are reused) or scancel them"
            )

    def earlier_jobs(self) -> list[str]:
        """Our jobs (by name and working folder) still queued or running: a second sweep would repeat them."""
        proc = self.run_cmd(["squeue", "-h", "-o", "%A|%j|%Z"])
        rows = [line.split("|", 2) for line in proc.stdout.splitlines() if line.count("|") == 2]
        root = str(self.root.resolve())
        return sorted({job for job, name, cwd in rows if name.startswith("tost-") and cwd == root})

    def run(self, orders: Sequence[Order]) -> list[Failure]:
        self.check()
        sub = Submission(self._folder())
        with _cancel_on_signal(lambda: self.cancel(sub)):  # also a failure between the two sbatch calls
            self.submit(sub, orders)
            return self.wait(sub, [o.name for o in orders])

    def _folder(self) -> Path:
        folder = self.root / ".dvc" / "tmp" / "tost-slurm" / f"{time.strftime('%Y%m%d-%H%M%S')}-{_unique()}"
        for sub in ("logs", "cells", "work"):
            (folder / sub).mkdir(parents=True)
        return folder

    def submit(self, sub: Submission, orders: Sequence[Order]) -> Submission:
        """Write the spec and submit the leads' array, then the rest depending on it."""
        size = max(1, self.cfg.gpus * self.per_gpu)
        arrays = {"lead": chunks([o for o in orders if o.lead], size)}
        arrays["rest"] = chunks([o for o in orders if not o.lead], size)
        spec = snapshot(self.root, self.run_cmd) | {
            "folder": str(sub.folder),
            "python": sys.executable,
            "cpus": self.cfg.cpus,
            "per_gpu": self.per_gpu,
            "arrays": {
                k: [[{"name": o.name, "args": list(o.set_args)} for o in t] for t in v]
                for k, v in arrays.items()
            },
        }
        (sub.folder / "spec.json").write_text(json.dumps(spec, indent=1), encoding="utf-8")
        after = None
        for array, tasks in arrays.items():
            if tasks:
                job = self._sbatch(sub.folder, array, len(tasks), after)
                sub.jobs.append(job)
                sub.tasks |= {f"{job}_{i}": [o.name for o in task] for i, task in enumerate(tasks)}
                after = job
                log.info("table: submitted SLURM job %s: %d task(s) (%s)", job, len(tasks), array)
        log.info("table: job logs in %s", sub.folder.relative_to(self.root))
        return sub

    def _sbatch(self, folder: Path, array: str, n: int, after: str | None) -> str:
        throttle = f"%{self.cfg.max_running}" if self.cfg.max_running else ""
        spec = shlex.quote(str(folder / "spec.json"))
        job = f"exec {shlex.quote(sys.executable)} -m sweep.job {spec} {array} "
        cmd = [
            "sbatch", "--parsable", f"--job-name=tost-{array}", f"--array=0-{n - 1}{throttle}",
            f"--output={folder / 'logs' / '%A_%a.out'}", f"--chdir={self.root}", *sbatch_options(self.cfg),
            *([f"--dependency=afterany:{after}"] if after else []),
            f"--wrap={job}$SLURM_ARRAY_TASK_ID",
        ]  # fmt: skip
        proc = self.run_cmd(cmd)
        if proc.returncode != 0:
            raise TostError(f"executor slurm: sbatch failed: {_error(proc)}")
        return proc.stdout.strip().split(";")[0]

    def cancel(self, sub: Submission) -> None:
        """Cancel (scancel) exactly the jobs this sweep submitted, by id."""
        if sub.jobs:
            self.run_cmd(["scancel", *sub.jobs])
            log.info("table: stopping: cancelled SLURM job(s) %s", ", ".join(sub.jobs))

    def states(self, sub: Submission) -> dict[str, str]:
        """Task -> SLURM state, for the tasks squeue still knows; none when it knows none of the jobs."""
        proc = self.run_cmd(
            ["squeue", "-h", "-r", "-t", "all", f"--jobs={','.join(sub.jobs)}", "-o", "%i|%T"]
        )
        if proc.returncode != 0:
            if "Invalid job id" in (proc.stderr + proc.stdout):
                return {}  # every job has left squeue
            # a busy controller times out now and then: the jobs run on, so wait with what we know
            log.warning("table: squeue failed (%s); trying again in %.0f s", _error(proc), self.poll)
            return {task: sub.seen[task] for task in sub.tasks if task in sub.seen}
        return dict(line.split("|", 1) for line in proc.stdout.split() if "|" in line)

    def cell(self, sub: Submission, name: str, states: dict[str, str]) -> tuple[str, Failure | None]:
        """One experiment's state (queued / running / done / failed) and, when failed, why."""
        task = sub.task_of(name)
        state = self._task_state(sub, task, states)
        result = sub.folder / "cells" / f"{name}.json"
        rc = json.loads(result.read_text(encoding="utf-8"))["rc"] if result.exists() else None
        if rc == 0:
            return "done", None
        if rc is not None and state in QUEUED | RUNNING | {"COMPLETED", "FAILED", GONE}:
            cell_log = sub.folder / "cells" / f"{name}.log"  # our own failure: the experiment's log says why
            return "failed", Failure(
                name, f"SLURM job {task}", f"FAILED (exit {rc})", str(cell_log), _tail(cell_log)
            )
        if state in QUEUED:
            return "queued", None
        if state in RUNNING:
            return "running", None
        if state == "COMPLETED":
            state = "COMPLETED without a result file"
        job_log = (
            sub.folder / "logs" / f"{task}.out"
        )  # SLURM ended it (CANCELLED, TIMEOUT, ...): its log says
        return "failed", Failure(name, f"SLURM job {task}", state, str(job_log), _tail(job_log))

    @staticmethod
    def _task_state(sub: Submission, task: str, states: dict[str, str]) -> str:
        """What squeue says of the task, or its last state once it is gone ("" if it never had one)."""
        if task in states:
            sub.missing[task] = 0
            sub.seen[task] = states[task]
            return states[task]
        sub.missing[task] = sub.missing.get(task, 0) + 1
        last = sub.seen.get(task, "")
        if last and last not in QUEUED | RUNNING:
            return last  # ended, then forgotten by SLURM: keep how it ended
        return (last or "PENDING") if sub.missing[task] < 2 else GONE  # absent twice in a row: gone

    def wait(self, sub: Submission, names: Sequence[str]) -> list[Failure]:
        """Poll until every experiment is done or failed; one progress line per change of the counts."""
        start, last = time.monotonic(), ""
        while True:
            states = self.states(sub)
            seen = {name: self.cell(sub, name, states) for name in names}
            counts = {s: sum(state == s for state, _ in seen.values()) for s in STATES}
            line = ", ".join(f"{counts[s]} {s}" for s in STATES)
            if line != last:
                log.info("table: SLURM: %s (%.0f s)", line, time.monotonic() - start)
                last = line
            if counts["queued"] + counts["running"] == 0:
                return [f for _, f in seen.values() if f is not None]
            self.sleep(self.poll)


def snapshot(root: Path, run_cmd: Run = _run) -> dict:
    """What a job needs to rebuild this checkout: commit, uncommitted changes, DVC cache, data folder."""

    def out(*cmd: str) -> str:
        proc = run_cmd(list(cmd))
        if proc.returncode != 0:
            raise TostError(f"executor slurm: {' '.join(cmd[:3])} failed: {_error(proc)}")
        return proc.stdout

    rev = out("git", "-C", str(root), "rev-parse", "HEAD").strip()
    patch = out("git", "-C", str(root), "diff", "--binary", "HEAD")
    cache = out(sys.executable, "-m", "dvc", "cache", "dir").strip()
    local = root / ".dvc" / "config.local"
    return {
        "checkout": str(root),
        "rev": rev,
        "patch": patch,
        "cache": str((root / cache).resolve()) if cache else str(root / ".dvc" / "cache"),
        "config_local": local.read_text(encoding="utf-8") if local.exists() else "",
        "data": str(root / "data") if (root / "data").is_dir() else "",
    }


@contextmanager
def _cancel_on_signal(cancel: Callable[[], None]) -> Iterator[None]:
    """SIGINT and SIGTERM cancel our jobs, then end the sweep as an interruption (exit 130).

    So does a failure to submit, which would otherwise leave the first array's jobs behind.
    """

    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    # SIGINT too: a process started with SIGINT ignored (shell background `&`, a test runner) keeps it so
    old = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    except (KeyboardInterrupt, TostError):
        cancel()
        raise
    finally:
        for sig, previous in old.items():
            signal.signal(sig, previous)


def _error(proc: subprocess.CompletedProcess) -> str:
    """SLURM's own `error:` line (sbatch follows it with a vaguer one), else the last line."""
    text = proc.stderr or proc.stdout or f"exit {proc.returncode}"
    errors = [line.strip() for line in text.splitlines() if "error:" in line]
    return errors[0] if errors else last_line(text)


def _tail(path: Path) -> str:
    try:
        return why(path.read_text(encoding="utf-8", errors="replace"))
    except OSError:
        return "(no log written)"


def _unique() -> str:
    return f"{time.time_ns() % 1_000_000:06d}"
