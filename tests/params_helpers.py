"""Params pieces shared across test folders: parsed values read back by dotted key, trick windows."""

from __future__ import annotations

from typing import Any

from tost import config
from tost.sparsity.methods import ALIASES

# `tricks` for `variant_trainer`: the windowed tricks' windows run to the end (the original's schedule)
TO_THE_END = {name: {"start": 1.0, "end": 1.0} for name in ("soft_act", "ghost_skip", "label_smooth")}


def parsed(p: config.Params, dotted: str) -> Any:
    """The parsed value of a dotted key, wherever `Params` keeps it."""
    section, *rest = dotted.split(".")
    if section == "seed":
        return p.seed
    if section == "tricks" and rest == ["run"]:
        return p.tricks.run
    if section == "tricks":
        return getattr(p.tricks.options[rest[0]], rest[1])
    if section == "prune" and len(rest) == 2:
        return getattr(p.prune_options[rest[0]], rest[1])
    node = getattr(p, section)
    for part in rest:  # report.slurm.partition: a nested section
        node = getattr(node, part)
    return node


def same(given_value: Any, value: Any, dotted: str) -> bool:
    """Whether a parsed value is the one written in YAML (aliases resolved, lists read as tuples)."""
    if dotted == "prune.method" and given_value in ALIASES:
        return ALIASES[given_value] == value
    if isinstance(value, tuple):
        return isinstance(given_value, list) and all(
            same(a, b, dotted) for a, b in zip(given_value, value, strict=True)
        )
    if isinstance(value, float) and isinstance(given_value, str):
        return float(given_value) == value
    return given_value == value and (type(given_value) is bool) == (type(value) is bool)
