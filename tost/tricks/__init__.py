"""Trick registry and the variants the train stage offers (`tricks.run`).

A variant is a tuple of trick names; its order is the order the hooks run in. `baseline` has none.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from tost.tricks.base import Trick


class TrickEntry:
    """A registry entry: the trick's options dataclass and a factory from (options, epochs)."""

    def __init__(self, options: type | None, make: Callable[[Any], Trick]) -> None:
        self.options = options
        self.make = make


TRICKS: dict[str, TrickEntry] = {}

VARIANTS: dict[str, tuple[str, ...]] = {
    "baseline": (),
    **{name: (name,) for name in TRICKS},
}


def build_variant(variant: str, options: Mapping[str, Any]) -> list[Trick]:
    """Instantiate the tricks of `variant` with their validated options."""
    return [TRICKS[name].make(options.get(name)) for name in VARIANTS[variant]]
