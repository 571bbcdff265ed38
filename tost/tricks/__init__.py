"""Trick registry and the variants the train stage offers (`tricks.run`).

A variant is a tuple of trick names; its order is the order the hooks run in. `baseline` has none.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from tost.tricks import ghost_skip, label_smooth, lrsi, soft_act
from tost.tricks.base import Trick


class TrickEntry:
    """A registry entry: the trick's options dataclass and a factory from (options, epochs)."""

    def __init__(self, options: type | None, make: Callable[[Any], Trick]) -> None:
        self.options = options
        self.make = make


TRICKS: dict[str, TrickEntry] = {
    "soft_act": TrickEntry(soft_act.SoftActOptions, soft_act.SoftAct),
    "ghost_skip": TrickEntry(ghost_skip.GhostSkipOptions, ghost_skip.GhostSkip),
    "label_smooth": TrickEntry(label_smooth.LabelSmoothOptions, label_smooth.LabelSmooth),
    "lrsi": TrickEntry(lrsi.LrsiOptions, lrsi.Lrsi),
}

VARIANTS: dict[str, tuple[str, ...]] = {
    "baseline": (),
    **{name: (name,) for name in TRICKS},
    "tost": ("lrsi", "ghost_skip", "soft_act", "label_smooth"),  # all four; GradInit first, on the plain net
}


def build_variant(variant: str, options: Mapping[str, Any]) -> list[Trick]:
    """Instantiate the tricks of `variant` with their validated options."""
    return [TRICKS[name].make(options.get(name)) for name in VARIANTS[variant]]
