"""What every stage shares: logging, the one-line error for user mistakes, and small glue helpers."""

from __future__ import annotations

import hashlib
import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch import nn

from tost import models
from tost.config import Params
from tost.errors import CheckpointError, TostError

PARAMS = Path("params.yaml")


def run_stage(main: Callable[[], None]) -> None:
    """Run a stage; a `TostError` becomes one `error: ...` line on stderr and exit code 2."""
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout, force=True)
    try:
        main()
    except TostError as err:
        print(f"error: {err}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        print("error: interrupted; finished epochs are kept, rerun to resume", file=sys.stderr, flush=True)
        raise SystemExit(130) from None


def build_model(p: Params, num_classes: int, shape: tuple[int, int, int]) -> nn.Module:
    return models.build(p.model.arch, num_classes, shape, p.model.width)


def load_weights(model: nn.Module, obj: Any, source: Path, p: Params) -> None:
    """Load a tost init/checkpoint into `model`, refusing (in one line) one made for another model."""
    state = obj.get("state_dict") if isinstance(obj, dict) else None
    if not isinstance(state, dict):
        raise CheckpointError(f"{source}: not a tost init or checkpoint (no state_dict)")
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shaped = [k for k in expected if k in state and tuple(state[k].shape) != tuple(expected[k].shape)]
    problems = [
        f"{len(v)} {what} ({v[0]})"
        for what, v in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", shaped))
        if v
    ]
    if problems:
        raise CheckpointError(
            f"{source}: does not fit model.arch={p.model.arch} width={p.model.width}: "
            f"{', '.join(problems)}; was it made with other model settings?"
        )
    model.load_state_dict(state)


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def fingerprint(parts: dict[str, Any], files: list[Path]) -> str:
    """Identify a run by its params and input files, so a resume file is only used for the same run."""
    h = hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode())
    for f in files:
        h.update(file_digest(f).encode())
    return h.hexdigest()
