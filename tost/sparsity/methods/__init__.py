"""Mask-method registry: `prune.method` → method; one file per method, one line per entry here."""

from __future__ import annotations

from tost.sparsity.methods import file, gmp, grasp, lt, magnitude, random, snip, synflow, taylor
from tost.sparsity.methods.base import Method

METHODS: dict[str, Method] = {
    "random": random.METHOD,
    "magnitude": magnitude.METHOD,
    "gmp": gmp.METHOD,
    "taylor": taylor.METHOD,
    "snip": snip.METHOD,
    "grasp": grasp.METHOD,
    "synflow": synflow.METHOD,
    "lt": lt.METHOD,
    "file": file.METHOD,
}

# The paper's table labels, accepted in params and resolved to the canonical key at load time.
ALIASES: dict[str, str] = {"rp": "random", "omp": "magnitude", "tp": "taylor"}
