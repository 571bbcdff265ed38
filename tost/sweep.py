"""A sweep of DVC experiments: which cells it needs, which already exist, queueing and waiting.

The table is built only from DVC experiments, so every number in it can be traced to an experiment
name (`dvc exp show`, `dvc exp apply NAME`). A cell is *the same run* as an existing experiment when
their validated params are equal (everything but the `report` section, after aliases and YAML number
spellings are normalised), so experiments a user already ran by hand are reused and nothing is run
twice. Experiment names are derived from those params, which makes a rerun after an interruption
find what is still queued or running instead of queueing it again.

DVC is driven through its command line (a `Dvc` callable), never through its internal Python API,
which is not a stable interface; tests substitute the callable where DVC itself is not the subject.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import logging
import math
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tost import config
from tost.errors import ConfigError, TostError
from tost.table import Run

log = logging.getLogger(__name__)

Dvc = Callable[[Sequence[str]], str]  # runs `dvc <args>`, returns stdout, raises TostError on failure
STATUSES = ("Queued", "Running", "Success", "Failed")
DVC = (sys.executable, "-m", "dvc")  # the dvc of this environment, whatever PATH holds


def run_dvc(args: Sequence[str], env: Mapping[str, str] | None = None) -> str:
    """Run `dvc` and return its stdout; a failure becomes one error with DVC's own last line."""
    proc = subprocess.run([*DVC, *args], capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0:
        last = (proc.stderr.strip() or proc.stdout.strip() or "no output").splitlines()[-1]
        raise TostError(f"dvc {' '.join(args[:3])} ... failed: {last}")
    return proc.stdout


def start_queue(jobs: int, env: Mapping[str, str] | None = None) -> None:
    """Run `dvc queue start -j N`, its output going to a file rather than a pipe.

    The workers it starts are daemons that inherit our file descriptors: they would hold a pipe open
    and `subprocess.run` would never return.
    """
    with tempfile.TemporaryFile("w+") as err:
        proc = subprocess.run(
            [*DVC, "queue", "start", "-j", str(jobs)],
            stdout=subprocess.DEVNULL, stderr=err, env=env, check=False,
        )  # fmt: skip
        if proc.returncode != 0:
            err.seek(0)
            last = (err.read().strip() or "no output").splitlines()[-1]
            raise TostError(f"dvc queue start failed: {last}")


# ----------------------------------------------------------------------------------- params algebra


def flatten(raw: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Dotted leaf keys of a nested mapping; lists are leaves (DVC's `-S` sets them whole)."""
    out: dict[str, Any] = {}
    for key, value in raw.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, dotted + "."))
        else:
            out[dotted] = value
    return out


def override(raw: Mapping[str, Any], updates: Mapping[str, Any], source: str) -> dict[str, Any]:
    """A copy of `raw` with dotted `updates` applied; a key params.yaml does not have is an error.

    Presets may only change existing knobs: a misspelt key in a preset would otherwise be passed to
    DVC, silently create a new params entry, and train the default instead.
    """
    out = copy.deepcopy(dict(raw))
    for dotted, value in updates.items():
        node: Any = out
        *parents, leaf = dotted.split(".")
        for part in parents:
            if not isinstance(node, Mapping) or part not in node:
                raise ConfigError(f"{source}: {dotted}: no such key in params.yaml")
            node = node[part]
        if not isinstance(node, Mapping) or leaf not in node or isinstance(node[leaf], Mapping):
            raise ConfigError(f"{source}: {dotted}: no such key in params.yaml")
        node[leaf] = value
    return out


def training_identity(raw: Mapping[str, Any]) -> str:
    """Canonical JSON of everything that determines a run's results (all params but `report`)."""
    return _identity(config.parse(raw))


def _identity(params: config.Params) -> str:
    fields = {f.name: getattr(params, f.name) for f in dataclasses.fields(params) if f.name != "report"}
    plain = json.loads(json.dumps(fields, default=_plain, sort_keys=True))
    return json.dumps(plain, sort_keys=True)


def _plain(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}
    if isinstance(obj, Mapping):
        return dict(obj)
    raise TypeError(f"cannot serialise {type(obj).__name__}")


def set_args(workspace: Mapping[str, Any], target: Mapping[str, Any]) -> list[str]:
    """`-S key=value` arguments that turn the workspace params.yaml into `target` (report excluded)."""
    now = {k: v for k, v in flatten(workspace).items() if not k.startswith("report.")}
    args = []
    for key, value in flatten(target).items():
        if key.startswith("report.") or (key in now and now[key] == value and type(now[key]) is type(value)):
            continue
        args += ["-S", f"{key}={json.dumps(value)}"]  # JSON literals are valid DVC (Hydra) override values
    return args


# ----------------------------------------------------------------------------------------- cells


@dataclass(frozen=True)
class Cell:
    """One experiment of the sweep: a mask method at a sparsity with a seed; it trains every variant."""

    method: str
    sparsity: float
    seed: int
    params: Mapping[str, Any]  # the full params.yaml of this experiment
    identity: str  # `training_identity(params)`

    @property
    def name(self) -> str:
        digest = hashlib.sha256(self.identity.encode()).hexdigest()[:7]
        return f"{self.method}-sp{self.sparsity:g}-seed{self.seed}-{digest}"


def lt_rounds(sparsity: float, rate: float) -> int:
    """Rounds of iterative magnitude pruning that reach `sparsity` pruning about `rate` per round.

    The paper's lottery tickets prune 20 % of what remains per round, so a higher sparsity takes more
    rounds (0.59 → 4, 0.89 → 10); the geometric schedule then lands on `sparsity` exactly.
    """
    if sparsity <= 0.0:
        return 1
    return max(1, round(math.log(1.0 - sparsity) / math.log(1.0 - rate)))


def plan(base: Mapping[str, Any]) -> list[Cell]:
    """Every cell of the sweep that `base`'s `report` section asks for, in table order."""
    report = config.parse(base).report
    cells = []
    for sparsity in report.sparsities:
        for method in report.methods:
            rounds = lt_rounds(sparsity, report.lt_rate) if method == "lt" else base["prune"]["rounds"]
            for seed in report.seeds:
                raw = override(
                    base,
                    {
                        "prune.method": method,
                        "prune.sparsity": sparsity,
                        "prune.rounds": rounds,
                        "seed": seed,
                    },
                    "report",
                )
                cells.append(Cell(method, sparsity, seed, raw, training_identity(raw)))
    return cells


# ------------------------------------------------------------------------------- DVC experiments


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


def parse_exp_show(text: str) -> list[Experiment]:
    """The experiments (not the workspace or baseline commits) in `dvc exp show --json` output."""
    out = []
    for rev in _revisions(json.loads(text or "[]")):
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


def as_run(exp: Experiment, params: config.Params, variants: Sequence[str], metric: str) -> Run | None:
    """The table's view of one experiment; None unless every variant's metrics are present."""
    accuracy = {}
    for variant in variants:
        data = exp.metrics.get(f"metrics/train/{variant}.json") or {}
        if not isinstance(data.get(metric), int | float):
            return None
        accuracy[variant] = float(data[metric])
    return Run(exp.name, params.prune.method, params.prune.sparsity, params.seed, accuracy)


def match(cells: Sequence[Cell], exps: Sequence[Experiment], variants: Sequence[str], metric: str) -> dict:
    """Cell name -> (Experiment, Run) for every cell some finished experiment already answers."""
    by_identity: dict[str, tuple[Experiment, Run]] = {}
    for exp in exps:
        if exp.params is None:
            continue
        try:
            params = config.parse(exp.params)
        except ConfigError:
            continue  # made by another version of the params layout: not comparable
        run = as_run(exp, params, variants, metric)
        if run is not None:
            by_identity.setdefault(_identity(params), (exp, run))
    return {c.name: by_identity[c.identity] for c in cells if c.identity in by_identity}


def queue_status(dvc: Dvc) -> dict[str, str]:
    """Experiment name -> Queued / Running / Success / Failed, from `dvc queue status`'s table."""
    out: dict[str, str] = {}
    for line in dvc(["queue", "status"]).splitlines():
        words = line.split()
        if len(words) >= 3 and words[-1] in STATUSES:
            out[words[1]] = words[-1]  # Task Name Created(…) Status; unnamed tasks are never ours
    return out


def enqueue(
    dvc: Dvc, cells: Sequence[Cell], workspace: Mapping[str, Any], exps: Sequence[Experiment]
) -> list[str]:
    """Queue every cell not already queued or running; returns the names now pending."""
    status = queue_status(dvc)
    existing = {e.name for e in exps}
    pending = []
    for cell in cells:
        state = status.get(cell.name)
        if state in ("Queued", "Running"):
            log.info("table: %s is already %s", cell.name, state.lower())
        else:
            if state in ("Failed", "Success"):
                dvc(["queue", "remove", cell.name])  # a finished task of the same name blocks the name
            if cell.name in existing:  # an incomplete experiment (e.g. variants added since): redo it
                dvc(["exp", "remove", cell.name])
            dvc(["exp", "run", "--queue", "-n", cell.name, *set_args(workspace, cell.params)])
            log.info("table: queued %s", cell.name)
        pending.append(cell.name)
    return pending


def wait(
    dvc: Dvc, names: Sequence[str], poll_s: float = 10.0, sleep: Callable[[float], None] = time.sleep
) -> dict[str, str]:
    """Poll the queue until none of `names` is queued or running; print progress; final statuses."""
    start = time.monotonic()
    last = ""
    unlisted: set[str] = set()
    while True:
        status = queue_status(dvc)
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
        sleep(poll_s)
