"""Mask-method registry: `prune.method` → method; one file per method, one line per entry here."""

from __future__ import annotations

from tost.sparsity.methods import random
from tost.sparsity.methods.base import Method

METHODS: dict[str, Method] = {
    "random": random.METHOD,
}

# The paper's table labels, accepted in params and resolved to the canonical key at load time.
ALIASES: dict[str, str] = {"rp": "random", "omp": "magnitude", "tp": "taylor"}
