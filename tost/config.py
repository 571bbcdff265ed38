"""params.yaml → frozen dataclasses, validated before any work starts.

params.yaml is the only place a default is written: no field below has a default, and a missing or
unknown key is an error. That keeps `dvc params diff` and `dvc exp show` complete (every knob is in
the file) and makes a typo fail loudly instead of silently training with a default. Every error names
the dotted key that is wrong.
"""

from __future__ import annotations

import difflib
import math
import re
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields, is_dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args, get_origin, get_type_hints

import yaml

from tost.datasets import DATASETS
from tost.errors import ConfigError
from tost.models import MODELS
from tost.sparsity.methods import ALIASES, METHODS
from tost.tricks import TRICKS, VARIANTS

T = TypeVar("T")


@dataclass(frozen=True)
class DataConfig:
    """Which dataset, where its files live, how it is split and augmented."""

    name: str
    root: str
    download: bool
    val_fraction: float
    test_fraction: float
    train_subset: int
    crop_padding: int
    flip: bool

    def __post_init__(self) -> None:
        if self.name not in DATASETS:
            raise ValueError(f"name: unknown dataset {self.name!r}; choose one of {', '.join(DATASETS)}")
        for key in ("val_fraction", "test_fraction"):
            if not 0.0 < getattr(self, key) < 1.0:
                raise ValueError(f"{key} must be in (0, 1), got {getattr(self, key)}")
        if self.crop_padding < 0 or self.train_subset < 0:
            raise ValueError(
                f"crop_padding and train_subset must be >= 0, got {self.crop_padding}, {self.train_subset}"
            )


@dataclass(frozen=True)
class ModelConfig:
    """Architecture name and base width (channels of the first stage)."""

    arch: str
    width: int

    def __post_init__(self) -> None:
        if self.arch not in MODELS:
            raise ValueError(f"arch: unknown architecture {self.arch!r}; choose one of {', '.join(MODELS)}")
        if self.width < 1:
            raise ValueError(f"width must be >= 1, got {self.width}")


@dataclass(frozen=True)
class DenseConfig:
    """The dense network that magnitude-based methods prune and the report compares with."""

    epochs: int

    def __post_init__(self) -> None:
        if self.epochs < 0:
            raise ValueError(f"epochs must be >= 0, got {self.epochs}")


@dataclass(frozen=True)
class PruneConfig:
    """How the mask is found; method-specific knobs live in the method's own sub-section."""

    method: str
    sparsity: float
    rounds: int
    scope: Literal["global", "layerwise"]
    include_first: bool
    include_last: bool
    batches: int
    batch_size: int
    empty_layers: Literal["keep", "error"]
    path: str

    def __post_init__(self) -> None:
        key = ALIASES.get(self.method, self.method)
        if key not in METHODS:
            names = ", ".join([*METHODS, *ALIASES])
            raise ValueError(f"method: unknown method {self.method!r}; choose one of {names}")
        object.__setattr__(self, "method", key)  # metrics always record the canonical name
        if not 0.0 <= self.sparsity < 1.0:
            raise ValueError(f"sparsity must be in [0, 1), got {self.sparsity}")
        if self.rounds < 1:
            raise ValueError(f"rounds must be >= 1, got {self.rounds}")
        if self.batches < 1 or self.batch_size < 1:
            raise ValueError("batches and batch_size must be >= 1")
        if self.method == "file" and not self.path:
            raise ValueError("path: prune.method=file needs prune.path (a mask or checkpoint file)")


@dataclass(frozen=True)
class TrainConfig:
    """The one training loop's optimiser, schedule and runtime knobs."""

    epochs: int
    batch_size: int
    eval_batch_size: int
    lr: float
    momentum: float
    nesterov: bool
    weight_decay: float
    schedule: Literal["multistep", "cosine"]
    milestones: tuple[int, ...]
    gamma: float
    device: Literal["auto", "cpu", "cuda"]
    amp: bool
    cpu_amp: bool | Literal["auto"]
    channels_last: bool
    compile: bool
    cuda_graphs: bool
    cudnn_benchmark: bool
    test_every_epoch: bool
    max_grad_norm: float
    checkpoint_every: int
    nproc: int
    threads: int
    on_divergence: Literal["error", "stop"]

    def __post_init__(self) -> None:
        if not 1 <= self.threads <= 1024:
            raise ValueError(
                f"threads must be in [1, 1024] (CPU threads of each process), got {self.threads}"
            )
        if self.epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {self.epochs}")
        if self.batch_size < 1 or self.eval_batch_size < 1:
            raise ValueError("batch_size and eval_batch_size must be >= 1")
        if self.nproc < 1:
            raise ValueError(f"nproc must be >= 1, got {self.nproc}")
        if self.checkpoint_every < 1:
            raise ValueError(
                f"checkpoint_every must be >= 1 (epochs between resume files), got {self.checkpoint_every}"
            )
        if self.batch_size % self.nproc:
            raise ValueError(
                f"nproc={self.nproc} must divide train.batch_size={self.batch_size} "
                "(each process takes batch_size / nproc images of every batch)"
            )
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if not 0.0 <= self.momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {self.momentum}")
        if self.weight_decay < 0 or self.max_grad_norm < 0:
            raise ValueError("weight_decay and max_grad_norm must be >= 0")
        if list(self.milestones) != sorted(self.milestones) or any(m < 1 for m in self.milestones):
            raise ValueError(f"milestones must be increasing epoch numbers >= 1, got {list(self.milestones)}")
        if self.schedule == "multistep" and any(m > self.epochs for m in self.milestones):
            raise ValueError(
                f"milestones must lie within the {self.epochs} epochs for schedule multistep, "
                f"got {list(self.milestones)}"
            )


@dataclass(frozen=True)
class AnalysisConfig:
    """Activation statistics: how many test batches, what counts as near zero, histogram bins."""

    batches: int
    near_zero: float
    bins: int

    def __post_init__(self) -> None:
        if self.batches < 1 or self.bins < 2 or self.near_zero < 0:
            raise ValueError("batches must be >= 1, bins >= 2 and near_zero >= 0")


@dataclass(frozen=True)
class TricksConfig:
    """Which variants to train (`run`) and each trick's own options, keyed by trick name."""

    run: tuple[str, ...]
    options: Mapping[str, Any]

    def __post_init__(self) -> None:
        unknown = [v for v in self.run if v not in VARIANTS]
        if unknown:
            raise ValueError(f"run: unknown variant(s) {unknown}; choose from {', '.join(VARIANTS)}")
        if not self.run:
            raise ValueError("run: list at least one variant, e.g. [baseline]")
        if len(set(self.run)) != len(self.run):
            raise ValueError(f"run: variants listed twice: {list(self.run)}")

    def listed(self, variant: str) -> str:
        """`variant`, when `run` lists it: training another variant means the params do not match."""
        if variant not in self.run:
            raise ConfigError(f"tricks.run: variant {variant!r} is not listed in {list(self.run)}")
        return variant


@dataclass(frozen=True)
class SlurmConfig:
    """What each SLURM job of the sweep asks for (`python -m sweep --executor slurm`).

    Strings are passed to `sbatch` as they are, so they are checked for SLURM's formats here: a typo
    would otherwise surface only as a rejected job, or in the worst case as a job that asks for the
    cluster's default (wrong) time or memory.
    """

    partition: str  # "" = the cluster's default partition
    gpus: int  # GPUs per job; 0 = CPU only
    cpus: int  # CPUs per job (--cpus-per-task); 0 = train.threads per experiment of the job
    mem: str  # "" = the partition's default, else 16G, 4000M, ...
    time: str  # "" = the partition's default, else minutes, HH:MM:SS, D-HH:MM:SS, ...
    account: str
    qos: str
    constraint: str
    max_running: int  # array tasks running at once; 0 = as many as SLURM allows

    def __post_init__(self) -> None:
        for key, least in (("gpus", 0), ("cpus", 0), ("max_running", 0)):
            if getattr(self, key) < least:
                raise ValueError(f"{key}: must be >= {least}, got {getattr(self, key)}")
        if self.mem and not re.fullmatch(r"[1-9][0-9]*[KMGT]?", self.mem):
            raise ValueError(f"mem: a size like 16G or 4000M, got {self.mem!r}")
        if self.time and not re.fullmatch(r"([0-9]+-)?[0-9]+(:[0-9]{1,2}){0,2}", self.time):
            raise ValueError(f"time: minutes, HH:MM:SS or D-HH:MM:SS, got {self.time!r}")
        for key in ("partition", "account", "qos", "constraint"):
            if not re.fullmatch(r"[^\s,]*", getattr(self, key)):
                raise ValueError(f"{key}: one name without spaces, got {getattr(self, key)!r}")


@dataclass(frozen=True)
class ReportConfig:
    """The sweep behind the paper-style table (`make table`): which rows, seeds and sparsities.

    Only the table command reads this section; no DVC stage depends on it, so editing it never
    retrains anything.
    """

    methods: tuple[str, ...]
    seeds: tuple[int, ...]
    sparsities: tuple[float, ...]
    lt_rate: float
    jobs: int  # experiments at once; 0 = as many as the cores allow at train.threads each
    per_gpu: int
    metric: Literal["test_acc", "final_test_acc", "best_val_acc"]
    slurm: SlurmConfig

    def __post_init__(self) -> None:
        methods = tuple(ALIASES.get(m, m) for m in self.methods)
        if unknown := [m for m in methods if m not in METHODS or m == "file"]:
            names = ", ".join(m for m in METHODS if m != "file")
            raise ValueError(f"methods: unknown or unsweepable method(s) {unknown}; choose from {names}")
        object.__setattr__(self, "methods", methods)
        for key in ("methods", "seeds", "sparsities"):
            values = getattr(self, key)
            if not values:
                raise ValueError(f"{key}: list at least one")
            if len(set(values)) != len(values):
                raise ValueError(f"{key}: listed twice: {list(values)}")
        if bad := [s for s in self.sparsities if not 0.0 <= s < 1.0]:
            raise ValueError(f"sparsities must be in [0, 1), got {bad}")
        if not 0.0 < self.lt_rate < 1.0:
            raise ValueError(f"lt_rate must be in (0, 1), got {self.lt_rate}")
        if self.jobs < 0 or self.per_gpu < 1:
            raise ValueError(f"jobs must be >= 0 and per_gpu >= 1, got {self.jobs} and {self.per_gpu}")


@dataclass(frozen=True)
class Params:
    """Everything params.yaml holds."""

    seed: int
    data: DataConfig
    model: ModelConfig
    dense: DenseConfig
    prune: PruneConfig
    prune_options: Mapping[str, Any]
    train: TrainConfig
    tricks: TricksConfig
    analysis: AnalysisConfig
    report: ReportConfig


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


def coerce(value: Any, tp: Any, where: str) -> Any:
    """Check `value` against the annotation `tp`, converting only where YAML is lossy.

    PyYAML reads `5e-4` as a string and `1` where a float is meant as an int; both are accepted for
    floats. Nothing else is converted: a string where a number belongs is an error naming the key.
    """
    origin = get_origin(tp)
    if origin is Literal:
        if value not in get_args(tp):
            raise ConfigError(f"params.yaml: {where}: must be one of {list(get_args(tp))}, got {value!r}")
        return value
    if origin in (types.UnionType, typing.Union):
        for arg in get_args(tp):
            try:
                return coerce(value, arg, where)
            except ConfigError:
                continue
        raise ConfigError(f"params.yaml: {where}: {value!r} does not fit {tp}")
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"params.yaml: {where}: must be a list, got {type(value).__name__}")
        (item,) = {a for a in get_args(tp) if a is not Ellipsis}
        return tuple(coerce(v, item, f"{where}[{i}]") for i, v in enumerate(value))
    if is_dataclass(tp):
        return build(tp, value, where)
    if tp is float:
        number = _number(value)
        if number is None:
            raise ConfigError(f"params.yaml: {where}: must be a number, got {value!r}")
        if not math.isfinite(number):  # NaN passes every range check (all comparisons are false)
            raise ConfigError(f"params.yaml: {where}: must be a finite number, got {value!r}")
        return number
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"params.yaml: {where}: must be an integer, got {value!r}")
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"params.yaml: {where}: must be true or false, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"params.yaml: {where}: must be a string, got {value!r}")
    raise TypeError(f"config: no coercion for {_type_name(tp)} at {where}")  # a bug in this module


def _number(value: Any) -> float | None:
    """`value` as a float: a YAML number, or a string like `1e-4` (YAML reads those as strings)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def build(cls: type[T], raw: Any, where: str) -> T:
    """Make dataclass `cls` from a YAML mapping; every error a user can cause names the dotted key."""
    if not isinstance(raw, Mapping):
        raise ConfigError(f"params.yaml: {where} must be a mapping, got {type(raw).__name__}")
    hints = get_type_hints(cls)
    names = {f.name for f in fields(cls)}
    if unknown := sorted(set(raw) - names):
        hint = did_you_mean(unknown, names)
        raise ConfigError(f"params.yaml: {where}: unknown key(s) {unknown}{hint}; expected {sorted(names)}")
    if missing := sorted(names - set(raw)):
        raise ConfigError(f"params.yaml: {where}: missing key(s) {missing}")
    values = {k: coerce(raw[k], hints[k], f"{where}.{k}") for k in names}
    try:
        return cls(**values)
    except ValueError as err:  # range and name checks from __post_init__
        raise ConfigError(f"params.yaml: {where}.{err}") from None


def did_you_mean(unknown: Iterable[str], known: Iterable[str]) -> str:
    """` (did you mean 'method'?)` for the closest known key of each typo'd one, or nothing."""
    close = [m[0] for k in unknown if (m := difflib.get_close_matches(str(k), list(known), n=1, cutoff=0.6))]
    return f" (did you mean {', '.join(repr(c) for c in dict.fromkeys(close))}?)" if close else ""


def _split_options(raw: Any, where: str, registry: Mapping[str, Any]) -> tuple[dict, dict]:
    """Separate a section's own keys from the per-entry option sub-sections (`prune.lt`, `tricks.lrsi`)."""
    if not isinstance(raw, Mapping):
        raise ConfigError(f"params.yaml: {where} must be a mapping, got {type(raw).__name__}")
    own = {k: v for k, v in raw.items() if k not in registry}
    opts = {k: v for k, v in raw.items() if k in registry}
    return own, opts


def _build_options(raw_opts: Mapping[str, Any], registry: Mapping[str, Any], where: str) -> dict[str, Any]:
    """Each registry entry that declares `options` (a dataclass) must have its sub-section, and vice versa."""
    out: dict[str, Any] = {}
    for name, entry in registry.items():
        cls = getattr(entry, "options", None)
        if cls is None:
            if name in raw_opts:
                raise ConfigError(f"params.yaml: {where}.{name}: {name} takes no options; remove the section")
            continue
        if name not in raw_opts:
            raise ConfigError(f"params.yaml: {where}: missing section {where}.{name}")
        out[name] = build(cls, raw_opts[name], f"{where}.{name}")
    return out


def parse(raw: Any) -> Params:
    """Validate a params mapping (already read from YAML) into `Params`."""
    if not isinstance(raw, Mapping):
        raise ConfigError("params.yaml: the top level must be a mapping of sections")
    top = {"seed", "data", "model", "dense", "prune", "train", "tricks", "analysis", "report"}
    if unknown := sorted(set(raw) - top):
        raise ConfigError(
            f"params.yaml: unknown key(s) {unknown}{did_you_mean(unknown, top)}; expected {sorted(top)}"
        )
    if missing := sorted(top - set(raw)):
        raise ConfigError(f"params.yaml: missing section(s) {missing}")
    prune_raw, prune_opts = _split_options(raw["prune"], "prune", METHODS)
    tricks_raw, trick_opts = _split_options(raw["tricks"], "tricks", TRICKS)
    if unknown := sorted(set(tricks_raw) - {"run"}):
        hint = did_you_mean(unknown, ["run", *TRICKS])
        raise ConfigError(
            f"params.yaml: tricks: unknown key(s) {unknown}{hint}; expected run or {sorted(TRICKS)}"
        )
    if "run" not in tricks_raw:
        raise ConfigError("params.yaml: tricks: missing key run")
    run = coerce(tricks_raw["run"], tuple[str, ...], "tricks.run")
    try:
        tricks = TricksConfig(run=run, options=_build_options(trick_opts, TRICKS, "tricks"))
    except ValueError as err:
        raise ConfigError(f"params.yaml: tricks.{err}") from None
    params = Params(
        seed=coerce(raw["seed"], int, "seed"),
        data=build(DataConfig, raw["data"], "data"),
        model=build(ModelConfig, raw["model"], "model"),
        dense=build(DenseConfig, raw["dense"], "dense"),
        prune=build(PruneConfig, prune_raw, "prune"),
        prune_options=_build_options(prune_opts, METHODS, "prune"),
        train=build(TrainConfig, raw["train"], "train"),
        tricks=tricks,
        analysis=build(AnalysisConfig, raw["analysis"], "analysis"),
        report=build(ReportConfig, raw["report"], "report"),
    )
    check_across_sections(params)
    return params


def check_across_sections(p: Params) -> None:
    """Checks that need two sections at once, so that they fail before any work like the rest."""
    lt = p.prune_options.get("lt")
    if lt is not None and lt.rewind_epoch > p.dense.epochs:
        raise ConfigError(
            f"params.yaml: prune.lt.rewind_epoch={lt.rewind_epoch} is after the end of the dense "
            f"training (dense.epochs={p.dense.epochs}); lower it"
        )
    if p.prune.method in ("gmp", "lt") and p.dense.epochs < 1:
        raise ConfigError(
            f"params.yaml: prune.method={p.prune.method} trains for dense.epochs per run, which is 0; "
            "set dense.epochs >= 1"
        )


def load(path: str | Path = "params.yaml") -> Params:
    """Read and validate params.yaml; the first thing every stage does."""
    p = Path(path)
    try:
        raw = yaml.safe_load(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{p}: not found; run from the repository root") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{p}: not valid YAML: {str(err).splitlines()[0]}") from None
    return parse(raw)
