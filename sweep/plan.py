"""Which experiments a table needs, and which finished experiments already answer them.

A cell (method, sparsity, seed) is *the same run* as an existing experiment when their validated
params are equal (everything but the `report` section, after aliases and YAML number spellings are
normalised: `tost.resume.run_identity`), so experiments a user already ran by hand are reused and
nothing is run twice. Experiment names are derived from that identity, which makes a rerun after an
interruption find what is still queued or running instead of queueing it again.

Presets (presets/*.yaml) are params overrides applied in order on top of params.yaml and passed to
each experiment with `-S`; params.yaml itself is never edited.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from sweep.dvc import Experiment
from sweep.table import Run
from tost import config
from tost.errors import ConfigError
from tost.resume import run_identity
from tost.runtime import describe

PRESETS = Path("presets")
# Everything that determines a run's results: every params section but `report`.
TRAINING = tuple(f.name for f in dataclasses.fields(config.Params) if f.name != "report")


def load_preset(name: str) -> dict[str, Any]:
    """presets/NAME.yaml (or a YAML path) as a mapping of params.yaml sections."""
    path = Path(name) if Path(name).suffix in (".yaml", ".yml") else PRESETS / f"{name}.yaml"
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        known = ", ".join(sorted(p.stem for p in PRESETS.glob("*.yaml")))
        raise ConfigError(f"preset {path}: not found (presets: {known})") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"preset {path}: not valid YAML: {str(err).splitlines()[0]}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"preset {path}: must be a mapping of params.yaml sections")
    return raw


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


def changed_keys(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[str]:
    """The dotted keys whose values differ between two params mappings (or that only one has)."""
    fa, fb = flatten(a), flatten(b)
    return sorted(k for k in set(fa) | set(fb) if fa.get(k, ...) != fb.get(k, ...))


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


def apply_presets(workspace: Mapping[str, Any], names: Sequence[str]) -> dict[str, Any]:
    """The workspace params with each preset applied in turn."""
    target = dict(workspace)
    for name in names:
        target = override(target, flatten(load_preset(name)), f"preset {name}")
    return target


def set_args(workspace: Mapping[str, Any], target: Mapping[str, Any]) -> list[str]:
    """`-S key=value` arguments that turn the workspace params.yaml into `target` (report excluded)."""
    now = {k: v for k, v in flatten(workspace).items() if not k.startswith("report.")}
    args = []
    for key, value in flatten(target).items():
        if key.startswith("report.") or (key in now and now[key] == value and type(now[key]) is type(value)):
            continue
        # JSON literals are valid DVC (Hydra) override values; compact, so that no value holds a space
        args += ["-S", f"{key}={json.dumps(value, separators=(',', ':'))}"]
    return args


@dataclass(frozen=True)
class Cell:
    """One experiment of the sweep: a mask method at a sparsity with a seed; it trains every variant."""

    method: str
    sparsity: float
    seed: int
    params: Mapping[str, Any]  # the full params.yaml of this experiment
    identity: str  # run_identity of its training sections

    @property
    def name(self) -> str:
        return f"{self.method}-sp{self.sparsity:g}-seed{self.seed}-{self.identity[:7]}"


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
    parsed = config.parse(base)
    report = parsed.report
    cells = []
    for sparsity in report.sparsities:
        for method in report.methods:
            rounds = lt_rounds(sparsity, report.lt_rate) if method == "lt" else parsed.prune.rounds
            for seed in report.seeds:
                updates = {"prune.method": method, "prune.sparsity": sparsity, "prune.rounds": rounds}
                raw = override(base, {**updates, "seed": seed}, "report")
                identity = run_identity(config.parse(raw), TRAINING)
                cells.append(Cell(method, sparsity, seed, raw, identity))
    return cells


def leads(cells: Sequence[Cell]) -> set[str]:
    """The first cell of each seed that more than one cell needs: it trains the seed's dense network.

    The dense stage leaves `prune` out of its params, so every cell of a seed needs the same network;
    an executor that starts a seed's other cells after its lead lets DVC's run-cache hand it to them
    instead of each training it at the same time.
    """
    by_seed: dict[int, list[str]] = {}
    for cell in cells:
        by_seed.setdefault(cell.seed, []).append(cell.name)
    return {names[0] for names in by_seed.values() if len(names) > 1}


def as_run(exp: Experiment, params: config.Params, variants: Sequence[str], metric: str) -> Run | None:
    """The table's view of one experiment; None unless every variant's metrics are present."""
    accuracy, weights, diverged = {}, {}, {}
    for variant in variants:
        data = exp.metrics.get(f"metrics/train/{variant}.json") or {}
        if not isinstance(data.get(metric), int | float):
            return None
        accuracy[variant] = float(data[metric])
        if "weights_trained" in data:
            weights[variant] = (int(data["weights_trained"]), int(data["weights_evaluated"]))
        if data.get("diverged_epoch"):
            diverged[variant] = int(data["diverged_epoch"])
    empty = (exp.metrics.get("metrics/mask.json") or {}).get("empty_layers") or 0
    empty = len(empty) if isinstance(empty, list) else int(empty)  # experiments before the headline layout
    p = params.prune
    return Run(
        exp.name, p.method, p.sparsity, params.seed, accuracy, empty, weights, exp.rev, diverged=diverged
    )


def with_machines(run: Run, read: Callable[[str], str | None]) -> Run:
    """`run` with the machine each variant's record names (`read(path)`: a file of its commit).

    The headline metrics DVC shows carry no machine; the full records in the experiment's commit
    (metrics/detail/train/<variant>.json) do, since tost records one.
    """
    named = {}
    for variant in run.accuracy:
        text = read(f"metrics/detail/train/{variant}.json")
        machine = json.loads(text).get("machine") if text else None
        if isinstance(machine, dict):
            named[variant] = describe(machine)
    return dataclasses.replace(run, machines=named)


def _parsed(exp: Experiment, report: Any) -> config.Params | None:
    """`exp`'s params under the sweep's own report section; None when not comparable.

    The sweep's report section replaces the experiment's: it holds no training knob, and an
    experiment made before a report key existed (report.slurm) must stay reusable.
    """
    if exp.params is None:
        return None
    try:
        return config.parse({**exp.params, "report": report or exp.params.get("report")})
    except ConfigError:
        return None  # made by another version of the params layout


def match(cells: Sequence[Cell], exps: Sequence[Experiment], variants: Sequence[str], metric: str) -> dict:
    """Cell name -> (Experiment, Run) for every cell some finished experiment already answers."""
    by_identity: dict[str, tuple[Experiment, Run]] = {}
    report = cells[0].params["report"] if cells else None
    for exp in exps:
        params = _parsed(exp, report)
        run = as_run(exp, params, variants, metric) if params is not None else None
        if run is not None:
            by_identity.setdefault(run_identity(params, TRAINING), (exp, run))
    return {c.name: by_identity[c.identity] for c in cells if c.identity in by_identity}


def match_cut(cells: Sequence[Cell], cut: Sequence[tuple[Experiment, str]]) -> dict:
    """Cell name -> (Experiment, Run) for cells whose mask was found to leave no path (`reason`).

    Such a network's output cannot depend on its input, so no variant is trained: the Run has no
    accuracies and says why, and the table counts the seed as cut instead of missing.
    """
    report = cells[0].params["report"] if cells else None
    by_identity = {}
    for exp, reason in cut:
        if (params := _parsed(exp, report)) is not None:
            p = params.prune
            run = Run(exp.name, p.method, p.sparsity, params.seed, {}, rev=exp.rev, cut=reason)
            by_identity.setdefault(run_identity(params, TRAINING), (exp, run))
    return {c.name: by_identity[c.identity] for c in cells if c.identity in by_identity}
