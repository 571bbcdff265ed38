"""Shared test helpers: the repository's params, tiny models, masks and synthetic data, one-call training."""

from __future__ import annotations

import copy
import os
import urllib.error
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from hypothesis import HealthCheck, settings
from torch import nn

from tost import config
from tost.config import DataConfig, TrainConfig
from tost.data import Prepared, Split
from tost.models import build
from tost.resume import ResumeDir
from tost.runtime import Runtime
from tost.sparsity.mask import Mask, prunable
from tost.train import FitResult, Trainer
from tost.tricks.base import Trick

ROOT = Path(__file__).resolve().parents[1]

# Generated-input tests: `ci` (the default) keeps them to seconds; HYPOTHESIS_PROFILE=thorough locally.
settings.register_profile("ci", max_examples=200, deadline=None, derandomize=True,
                          suppress_health_check=[HealthCheck.too_slow])  # fmt: skip
settings.register_profile(
    "thorough", max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
SHAPE = (1, 8, 8)


def repo_params() -> dict:
    """A fresh copy of the repository's params.yaml as a dict."""
    return copy.deepcopy(yaml.safe_load((ROOT / "params.yaml").read_text()))


@pytest.fixture
def raw_params() -> dict:
    """A fresh copy of the repository's params.yaml, to be edited by a test."""
    return repo_params()


def one_error_line(code: int | str | None, err: str) -> str:
    """What a user mistake must give: exit code 2 and a single `error:` line on stderr, no traceback."""
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def offline(*_args: Any, **_kwargs: Any) -> None:
    """Stands for a download function on a machine without network."""
    raise urllib.error.URLError("no network")


def same_tensors(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor]) -> bool:
    """The same names, and every tensor bit-identical (masks' `.tensors`, state dicts)."""
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def set_key(raw: dict, dotted: str, value: Any) -> None:
    """Set `a.b.c` in a nested params dict."""
    *path, last = dotted.split(".")
    node = raw
    for k in path:
        node = node[k]
    node[last] = value


def params(**changes: Any) -> config.Params:
    """The repository's params with dotted changes (`params(**{"train.lr": 0.05})`), validated."""
    raw = repo_params()
    for dotted, value in changes.items():
        set_key(raw, dotted, value)
    return config.parse(raw)


def tiny_prepared(n: int = 96, classes: int = 4, size: int = 8, channels: int = 1, seed: int = 0) -> Prepared:
    """Learnable synthetic images: each class is a bright square in its own corner, plus noise."""
    g = torch.Generator().manual_seed(seed)

    def split(m: int) -> Split:
        y = torch.arange(m) % classes
        x = torch.randint(0, 60, (m, channels, size, size), generator=g, dtype=torch.int64)
        half = size // 2
        for c in range(classes):
            r, q = divmod(c % 4, 2)
            x[y == c, :, r * half : (r + 1) * half, q * half : (q + 1) * half] += 150
        return Split(x=x.clamp(0, 255).to(torch.uint8), y=y.to(torch.int64))

    return Prepared(
        train=split(n), val=split(n // 4), test=split(n // 4), num_classes=classes,
        mean=(0.3,) * channels, std=(0.3,) * channels,
    )  # fmt: skip


@pytest.fixture
def tiny_data() -> Prepared:
    return tiny_prepared()


def tiny_net(arch: str = "resnet20", seed: int = 0, classes: int = 4, width: int = 4) -> nn.Module:
    """A narrow model for 8×8 grey images, built after seeding torch with `seed`."""
    torch.manual_seed(seed)
    return build(arch, classes, SHAPE, width)


def random_mask(net: nn.Module, sparsity: float = 0.8, seed: int = 0, apply: bool = False) -> Mask:
    """A seeded random mask over the prunable weights (about `sparsity` pruned); optionally applied."""
    g = torch.Generator().manual_seed(seed)
    mask = Mask({n: torch.rand(w.shape, generator=g) >= sparsity for n, w in prunable(net).items()})
    if apply:
        mask.apply_(prunable(net))
    return mask


def fit(
    net: nn.Module,
    mask: Mask,
    data: Prepared,
    dcfg: DataConfig,
    cfg: TrainConfig,
    tricks: Sequence[Trick] = (),
    rt: Runtime | None = None,
    seed: int = 0,
    name: str = "train",
    resume: ResumeDir | None = None,
    on_epoch_end: Callable[[Trainer], None] | None = None,
) -> FitResult:
    """One call for the tests: build a `Trainer` and run it to the end."""
    trainer = Trainer(net, mask, data, dcfg, cfg, tricks, rt or Runtime.cpu(), seed, name)
    return trainer.fit(resume, on_epoch_end)


def variant_trainer(
    variant: str, name: str = "train", *, tricks: dict | None = None, **train: Any
) -> Trainer:
    """A CPU `Trainer` of `variant` on the tiny data and net (seed 0), GradInit cut to 2 iterations.

    `tricks` overrides keys of trick sections (`{"soft_act": {"start": 1.0}}`), `train` train keys.
    """
    from tost.tricks import build_variant

    raw = repo_params()
    raw["train"].update(train)
    raw["tricks"]["lrsi"]["iters"] = 2
    for section, values in (tricks or {}).items():
        raw["tricks"][section].update(values)
    p = config.parse(raw)
    torch.manual_seed(0)
    net = tiny_net()
    tricks = build_variant(variant, p.tricks.options)
    return Trainer(net, random_mask(net), tiny_prepared(), p.data, p.train, tricks, Runtime.cpu(), 0, name)


class Imitation:
    """CUDA graphs' contract on the CPU: capture only records; replay runs what was recorded."""

    def __init__(self) -> None:
        self.captures = 0

    def warm(self, fn):
        return fn()

    def capture(self, fn):
        self.captures += 1
        return fn, None


@pytest.fixture
def float64():
    """Tensors made in the test default to float64; float32 again after it."""
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(torch.float32)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The slow modules (a DVC repo copy, a SLURM cluster) first: with one test process per core they
    then start at once, and the many short tests fill in around them instead of waiting behind."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)  # stable: file order kept


@pytest.fixture(scope="session", autouse=True)
def _share_the_cores() -> None:
    """With one test process per core (pytest-xdist), each process computes with its share of the cores:
    two processes of two threads each on two cores only wait for each other."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // workers))
