"""Trick registry and the variants the train stage offers (`tricks.run`).

One file per trick, one line per entry here. A variant is a tuple of trick names; its order is the
order the hooks run in. `baseline` has none.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from torch import nn

from tost.errors import ConfigError
from tost.tricks import ghost_skip, label_smooth, lrsi, soft_act
from tost.tricks.base import Trick, TrickEntry

TRICKS: dict[str, TrickEntry] = {
    "soft_act": soft_act.TRICK,
    "ghost_skip": ghost_skip.TRICK,
    "label_smooth": label_smooth.TRICK,
    "lrsi": lrsi.TRICK,
}

VARIANTS: dict[str, tuple[str, ...]] = {
    "baseline": (),
    **{name: (name,) for name in TRICKS},
    "tost": ("lrsi", "ghost_skip", "soft_act", "label_smooth"),  # all four; GradInit first, on the plain net
}


def used_options(variant: str, options: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The options of the tricks `variant` trains with, by trick name: all that it reads of `tricks`.

    The check stage writes them to a file per variant that its `train@` stage depends on instead of
    the whole `tricks` section, so moving one trick's window retrains only the variants that use it,
    and adding a variant retrains none of the others (DVC's run-cache returns them).
    """
    return {name: dataclasses.asdict(options[name]) for name in VARIANTS[variant] if name in options}


def kept(variant: str, tricks: list[Trick]) -> dict[str, dict[str, Any]]:
    """What the finished tricks of `variant` left in the network, by trick name (for the checkpoint)."""
    return {name: t.kept() for name, t in zip(VARIANTS[variant], tricks, strict=True) if t.kept()}


def restore(model: nn.Module, kept: Mapping[str, dict[str, Any]]) -> nn.Module:
    """Rebuild what tricks left in a trained network (a checkpoint's `kept`), so its weights load."""
    for name, state in kept.items():
        entry = TRICKS[name]
        if entry.restore is None:
            raise ConfigError(f"checkpoint: trick {name} left something in the network but cannot restore it")
        model = entry.restore(model, state)
    return model


def build_variant(variant: str, options: Mapping[str, Any]) -> list[Trick]:
    """Instantiate the tricks of `variant` with their validated options.

    At most one of them may define the training loss: two would silently shadow each other.
    """
    tricks = [TRICKS[name].make(options.get(name)) for name in VARIANTS[variant]]
    owners = [name for name, t in zip(VARIANTS[variant], tricks, strict=True) if t.overrides_loss]
    if len(owners) > 1:
        raise ConfigError(
            f"variant {variant}: tricks {owners} both define the loss; combine them in one trick"
        )
    return tricks
