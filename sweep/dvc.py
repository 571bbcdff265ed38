"""DVC's command line as the sweep uses it: run experiments through the queue, wait, read them back.

DVC is driven through its command line (a `Dvc` callable), never through its internal Python API,
which is not a stable interface; tests substitute the callable where DVC itself is not the subject.
"""

from __future__ import annotations

import json
import logging
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tost.errors import TostError

log = logging.getLogger(__name__)

Dvc = Callable[[Sequence[str]], str]  # runs `dvc <args>`, returns stdout, raises TostError on failure
STATUSES = ("Queued", "Running", "Success", "Failed")
MAX_RESTARTS = 3  # of the queue workers within one wait, before the sweep gives up
STATUS_TRIES = 3  # `dvc queue status` in a row that may fail before the sweep gives up
DVC = (sys.executable, "-m", "dvc")  # the dvc of this environment, whatever PATH holds


def last_line(text: str) -> str:
    """The last non-empty line of a command's output or a log: where a failing command says why."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else "(no output)"


def why(log: str) -> str:
    """The line of a stage's log that says why it failed, else its last line.

    tost's stages say it in one `error: ...` line, which DVC follows with a vaguer `ERROR: failed to
    reproduce`: the last line alone would hide the reason.
    """
    errors = [line.strip() for line in log.splitlines() if line.startswith("error: ")]
    return errors[-1] if errors else last_line(log)


def run_dvc(args: Sequence[str], env: Mapping[str, str] | None = None) -> str:
    """Run `dvc` and return its stdout; a failure becomes one error with DVC's own last line."""
    proc = subprocess.run([*DVC, *args], capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0:
        raise TostError(f"dvc {' '.join(args[:3])} ... failed: {last_line(proc.stderr or proc.stdout)}")
    return proc.stdout


def file_at(rev: str) -> Callable[[str], str | None]:
    """A reader of files in commit `rev` (an experiment's): the text, or None where it has none."""

    def read(path: str) -> str | None:
        if not rev:
            return None
        proc = subprocess.run(["git", "show", f"{rev}:{path}"], capture_output=True, text=True, check=False)
        return proc.stdout if proc.returncode == 0 else None

    return read


def start_queue(jobs: int, env: Mapping[str, str] | None = None) -> None:
    """Run `dvc queue start -j N`, its output going to a file rather than a pipe.

    The workers it starts are daemons that inherit our file descriptors: they would hold a pipe open
    and `subprocess.run` would never return.
    """
    with tempfile.TemporaryFile("w+") as err:
        cmd = [*DVC, "queue", "start", "-j", str(jobs)]
        proc = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=err, env=env, check=False)
        if proc.returncode != 0:
            err.seek(0)
            raise TostError(f"dvc queue start failed: {last_line(err.read())}")


@dataclass(frozen=True)
class Experiment:
    """One DVC experiment as `dvc exp show --json` describes it."""

    name: str
    rev: str
    params: Mapping[str, Any] | None  # params.yaml, None when DVC could not read it
    metrics: Mapping[str, Any]  # metrics file path -> its data


def _revisions(node: Any) -> Iterator[dict]:
    """Every experiment revision in the JSON, whatever the nesting of baselines and branches."""
    if isinstance(node, list):
        for item in node:
            yield from _revisions(item)
    elif isinstance(node, dict):
        for child in node.get("experiments") or []:
            executor = child.get("executor") or {}
            if executor.get("state") not in (None, "success"):
                continue  # queued or running: its metrics are the live, unfinished workspace's
            for rev in child.get("revs") or []:
                yield rev
                yield from _revisions(rev)


def _with_baselines(node: Any) -> Iterator[dict]:
    """The workspace, then each baseline commit followed by its experiments, as `dvc exp show` lists them."""
    for top in node if isinstance(node, list) else [node]:
        yield top
        yield from _revisions(top)


def parse_exp_show(text: str, baselines: bool = False) -> list[Experiment]:
    """The experiments in `dvc exp show --json` output; with `baselines`, the workspace and commits too."""
    out = []
    tree = json.loads(text or "[]")
    for rev in (_with_baselines if baselines else _revisions)(tree):
        data = rev.get("data") or {}
        name = rev.get("name") or rev.get("rev")
        if not name or rev.get("error"):
            continue
        params = ((data.get("params") or {}).get("params.yaml") or {}).get("data")
        metrics = {path: (m or {}).get("data") or {} for path, m in (data.get("metrics") or {}).items()}
        out.append(
            Experiment(name=name, rev=data.get("rev") or rev.get("rev", ""), params=params, metrics=metrics)
        )
    return out


def experiments(dvc: Dvc, all_commits: bool = False) -> list[Experiment]:
    """The finished experiments of the current commit, or of every commit with `all_commits`.

    Experiments of older commits ran older code: reusing them is the user's explicit choice
    (`--all-commits`), for when the commits since changed nothing that affects the results.
    """
    return parse_exp_show(dvc(["exp", "show", "--json", "--no-fetch", *(["-A"] if all_commits else [])]))


def exp_show_rows(dvc: Dvc, args: Sequence[str] = ()) -> list[Experiment]:
    """The workspace, the baseline commit(s) and their experiments; `args` go to `dvc exp show`."""
    return parse_exp_show(dvc(["exp", "show", "--json", "--no-fetch", *args]), baselines=True)


def queue_state(dvc: Dvc) -> tuple[dict[str, str], int | None]:
    """Experiment name -> Queued / Running / Success / Failed, and the workers up (active + idle).

    Both from `dvc queue status`; the worker count is None when DVC did not print it.
    """
    out: dict[str, str] = {}
    workers = None
    for line in _read_status(dvc).splitlines():
        words = line.split()
        if len(words) >= 3 and words[-1] in STATUSES:
            out[words[1]] = words[-1]  # Task Name Created(…) Status; unnamed tasks are never ours
        found = re.match(r"Worker status: (\d+) active, (\d+) idle", line.strip())
        if found:
            workers = int(found[1]) + int(found[2])
    return out, workers


def _read_status(dvc: Dvc, pause: float = 1.0) -> str:
    """`dvc queue status`'s output, read again when it fails.

    Read while a worker starts a task it can fail once ("Having any troubles?"; seen in a test sweep
    of one experiment); it is only a read, so a failure ends the sweep only when it repeats.
    """
    for attempt in range(1, STATUS_TRIES + 1):
        try:
            return dvc(["queue", "status"])
        except TostError as err:
            if attempt == STATUS_TRIES:
                raise
            log.info("table: %s; reading it again", err)
            time.sleep(pause)
    raise AssertionError("unreachable")


def queue_status(dvc: Dvc) -> dict[str, str]:
    """Experiment name -> Queued / Running / Success / Failed, from `dvc queue status`'s table."""
    return queue_state(dvc)[0]


def enqueue(dvc: Dvc, runs: Mapping[str, Sequence[str]], existing: set[str]) -> list[str]:
    """Queue each named run (name -> its `-S` arguments) not already queued or running.

    Returns the names now pending. A finished task of the same name blocks the name, and an
    experiment of that name that is incomplete (e.g. variants were added since) is redone.
    """
    status = queue_status(dvc)
    for name, set_args in runs.items():
        state = status.get(name)
        if state in ("Queued", "Running"):
            log.info("table: %s is already %s", name, state.lower())
            continue
        if state in ("Failed", "Success"):
            dvc(["queue", "remove", name])
        if name in existing:
            dvc(["exp", "remove", name])
        dvc(["exp", "run", "--queue", "-n", name, *set_args])
        log.info("table: queued %s", name)
    return list(runs)


def wait(
    dvc: Dvc,
    names: Sequence[str],
    poll_s: float = 10.0,
    sleep: Callable[[float], None] = time.sleep,
    restart: Callable[[], None] | None = None,
) -> dict[str, str]:
    """Poll the queue until none of `names` is queued or running; print progress; final statuses.

    With `restart`, experiments left waiting with no worker up (seen on two polls in a row, so that
    workers still starting are not mistaken for none) get the workers started again: a worker that
    exits early would otherwise leave the sweep waiting forever. DVC's workers do exit after their
    task when an earlier `dvc queue stop` left its shutdown message behind.
    """
    start = time.monotonic()
    last = ""
    unlisted: set[str] = set()
    idle_polls = restarts = 0
    while True:
        status, workers = queue_state(dvc)
        mine = {}
        for name in names:
            if name in status:
                mine[name] = status[name]
                unlisted.discard(name)
            else:  # DVC drops finished tasks after a while; absent twice in a row counts as finished
                mine[name] = "Success" if name in unlisted else "Running"
                unlisted.add(name)
        counts = {s: sum(v == s for v in mine.values()) for s in STATUSES}
        line = (
            f"table: {counts['Success']}/{len(names)} done, {counts['Running']} running, "
            f"{counts['Queued']} queued, {counts['Failed']} failed"
        )
        if line != last:
            log.info("%s (%.0f s)", line, time.monotonic() - start)
            last = line
        if counts["Queued"] + counts["Running"] == 0:
            return mine
        idle_polls = idle_polls + 1 if counts["Queued"] and not counts["Running"] and workers == 0 else 0
        if restart is not None and idle_polls == 2:
            if restarts == MAX_RESTARTS:
                raise TostError(
                    f"table: {counts['Queued']} experiment(s) queued but DVC's queue workers keep exiting "
                    f"({restarts} restarts); see .dvc/tmp/exps/celery/*.out, then rerun"
                )
            log.warning("table: no DVC queue worker is up and %d experiment(s) wait; starting workers again",
                        counts["Queued"])  # fmt: skip
            restart()
            restarts, idle_polls = restarts + 1, 0
        sleep(poll_s)
