"""Data sets for the tests: the prepared splits by name, and files in the real IDX format."""

from __future__ import annotations

import dataclasses
import struct
from pathlib import Path

import numpy as np

from tests.conftest import repo_params
from tost import config, data
from tost.datasets import split


def prep(name: str = "digits", root: Path = Path("."), val: float = 0.1, test: float = 0.2, seed: int = 0,
         subset: int = 0, download: bool = False) -> data.Prepared:  # fmt: skip
    """`split.prepare` with data settings given by name, the rest as in params.yaml."""
    cfg = dataclasses.replace(
        config.parse(repo_params()).data, name=name, root=str(root), download=download,
        val_fraction=val, test_fraction=test, train_subset=subset,
    )  # fmt: skip
    return split.prepare(cfg, seed)


def idx(array: np.ndarray) -> bytes:
    """The IDX format: magic (0, 0, type 0x08 = uint8, number of dimensions), big-endian sizes, data."""
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + b"".join(
        struct.pack(">I", d) for d in array.shape
    )
    return header + array.astype(np.uint8).tobytes()
