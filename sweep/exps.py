"""`python -m sweep.exps` (`make exps`): `dvc exp show` as a researcher reads it, in one screen.

Plain `dvc exp show` has a column for every param, every headline metric and every code dependency
(over 200 of them), which no terminal shows. This view keeps three things per experiment: its name
and commit, each variant's accuracy side by side, and only the params whose values differ between
the rows shown, written `key=value`. It reads `dvc exp show --json` and nothing else.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from sweep.dvc import Experiment, exp_show_rows, run_dvc
from tost.errors import TostError

MAX_COLUMNS = 20  # experiment, commit, up to six variants, and the changed params
TRAIN_PREFIX, TRAIN_SUFFIX = "metrics/train/", ".json"


def flatten(params: Mapping[str, Any] | None, prefix: str = "") -> dict[str, str]:
    """`{"prune": {"method": "snip"}}` -> `{"prune.method": "snip"}`, every value as compact text."""
    out: dict[str, str] = {}
    for key, value in (params or {}).items():
        if isinstance(value, Mapping):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            text = json.dumps(value, separators=(",", ":"))
            out[f"{prefix}{key}"] = text[1:-1] if len(text) > 2 and text[0] == '"' else text  # "" stays
    return out


def changed_params(rows: Sequence[Experiment]) -> list[str]:
    """The params (dotted keys, in params.yaml order) whose value is not the same in every row."""
    flat = [flatten(r.params) for r in rows]
    keys = list(dict.fromkeys(k for f in flat for k in f))
    return [k for k in keys if len({f.get(k) for f in flat}) > 1]


def variants(rows: Sequence[Experiment]) -> list[str]:
    """Variants with train metrics in any row: those `tricks.run` lists first, in its order."""
    listed: list[str] = []
    for r in rows:
        run = ((r.params or {}).get("tricks") or {}).get("run") or []
        listed += [v for v in run if isinstance(v, str) and v not in listed]
    found = {
        path[len(TRAIN_PREFIX) : -len(TRAIN_SUFFIX)]
        for r in rows
        for path in r.metrics
        if path.startswith(TRAIN_PREFIX) and path.endswith(TRAIN_SUFFIX)
    }
    return [v for v in listed if v in found] + sorted(found - set(listed))


def _accuracy(row: Experiment, variant: str, metric: str) -> str:
    value = (row.metrics.get(f"{TRAIN_PREFIX}{variant}{TRAIN_SUFFIX}") or {}).get(metric)
    return f"{value:.2f}" if isinstance(value, int | float) and math.isfinite(value) else "-"


def table(rows: Sequence[Experiment], metric: str = "test_acc") -> list[list[str]]:
    """Header and one line per row: name, commit, each variant's `metric`, then the changed params.

    At most `MAX_COLUMNS` columns: params that do not fit their own column share the last one.
    """
    names = variants(rows)
    params = changed_params(rows)
    room = max(MAX_COLUMNS - 2 - len(names), 1)
    own, shared = (params, []) if len(params) <= room else (params[: room - 1], params[room - 1 :])
    header = ["experiment", "rev", *names, *own, *(["other params"] if shared else [])]
    lines = [header]
    for r in rows:
        flat = flatten(r.params)
        rev = "" if r.rev == "workspace" else r.rev[:7]
        name = rev if r.name == r.rev and rev else r.name  # a commit no branch names: its short hash
        cells = [name, rev, *(_accuracy(r, v, metric) for v in names)]
        cells += [flat.get(k, "-") for k in own]
        if shared:
            cells.append(" ".join(f"{k}={flat[k]}" for k in shared if k in flat))
        lines.append(cells)
    return lines


def render(lines: Sequence[Sequence[str]], width: int = 160) -> str:
    """Columns padded to their widest cell; a line longer than `width` is cut with an ellipsis."""
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    out = []
    for line in lines:
        text = "  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip()
        out.append(text if len(text) <= width else text[: width - 1] + "…")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> None:
    """Print the table for the experiments of HEAD (or of --rev, or of every commit with -A)."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--metric", default="test_acc", help="train metric per variant (default test_acc)")
    ap.add_argument("--width", type=int, help="cut lines to this many characters (default: the terminal's)")
    ap.add_argument("-A", "--all-commits", action="store_true", help="experiments of every commit")
    ap.add_argument("--rev", help="experiments of this commit (default HEAD)")
    args = ap.parse_args(argv)
    width = args.width or max(shutil.get_terminal_size((160, 24)).columns, 80)
    try:
        rows = exp_show_rows(
            run_dvc, [*(["-A"] if args.all_commits else []), *(["--rev", args.rev] if args.rev else [])]
        )
    except TostError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    if not rows:
        print("no experiments: run `dvc repro` or `dvc exp run` first", file=sys.stderr)
        raise SystemExit(1)
    print(render(table(rows, args.metric), width))


if __name__ == "__main__":
    main()
