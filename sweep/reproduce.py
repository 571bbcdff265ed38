"""`python -m sweep.reproduce [A] [B]`: did B reproduce A's metrics, and if not, by how much and where?

`make repro` ends with it: the metrics the pipeline just made (the workspace) against the committed
ones (HEAD). Any two revisions work (`python -m sweep.reproduce v1 exp-name`). It compares the
headline metrics files DVC tracks (metrics/*.json, metrics/train/, metrics/analysis/), every number
but the timings, and prints one line: reproduced exactly, or different, with the machines that made
each side (from the records under metrics/detail/) and the largest test-accuracy difference in points
over how many test accuracies. CPU results are bit-identical only on the same CPU model with the same
threads and precision, so a difference with another machine named is expected, not a failure: the
exit code is 0 either way (2 for an unreadable revision).
"""

from __future__ import annotations

import argparse
import json
import subprocess
from pathlib import Path
from typing import Any

from stages._common import run_stage
from tost.errors import TostError
from tost.runtime import describe

WORKSPACE = "workspace"
TIMING = ("seconds", "images_per_s")  # keys that measure time: never equal twice
FOLDERS = ("metrics/train/", "metrics/analysis/")

Metrics = dict[str, dict[str, Any]]  # file -> its flat headline numbers


def _git(args: list[str]) -> str:
    proc = subprocess.run(["git", *args], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise TostError(f"git {' '.join(args)}: {proc.stderr.strip() or 'failed'}")
    return proc.stdout


def _headline(path: str) -> bool:
    top = path.count("/") == 1 and path.startswith("metrics/")
    return path.endswith(".json") and (top or path.startswith(FOLDERS))


def read(rev: str) -> tuple[Metrics, list[dict[str, Any]]]:
    """The headline metrics of `rev` (a git revision or `workspace`), and the machines its records name."""
    if rev == WORKSPACE:
        paths = [str(p) for p in Path("metrics").rglob("*.json")]
        text = lambda p: Path(p).read_text(encoding="utf-8")  # noqa: E731
    else:
        paths = _git(["ls-tree", "-r", "--name-only", rev, "metrics/"]).split()
        text = lambda p: _git(["show", f"{rev}:{p}"])  # noqa: E731
    metrics = {p: json.loads(text(p)) for p in sorted(paths) if _headline(p)}
    detail = [p for p in sorted(paths) if p.startswith("metrics/detail/")]
    machines = [m for p in detail if isinstance(m := json.loads(text(p)).get("machine"), dict)]
    return metrics, machines


def _flat(record: dict[str, Any]) -> dict[str, Any]:
    """A record with its nested numbers at the top (metrics/accuracy.json's `acc.baseline`).

    Each number is then compared, and named, on its own, not as one dict.
    """
    out: dict[str, Any] = {}
    for key, value in record.items():
        if isinstance(value, dict):
            out.update({f"{key}.{k}": v for k, v in _flat(value).items()})
        else:
            out[key] = value
    return out


def compared(a: Metrics, b: Metrics) -> dict[str, tuple[Any, Any]]:
    """(file:key) -> (A's value, B's value) for every number but timings, in either side."""
    out: dict[str, tuple[Any, Any]] = {}
    for path in sorted(set(a) | set(b)):
        ra, rb = _flat(a.get(path, {})), _flat(b.get(path, {}))
        for key in sorted(set(ra) | set(rb)):
            if not any(t in key for t in TIMING):
                out[f"{path.removeprefix('metrics/')}:{key}"] = (ra.get(key), rb.get(key))
    return out


def machines_line(machines: list[dict[str, Any]]) -> str:
    """The distinct machines of one side's records, or that it records none (made before tost did)."""
    named = sorted({describe(m) for m in machines})
    return "; ".join(named) if named else "a machine it does not record"


def verdict(a: Metrics, b: Metrics, a_machines: list, b_machines: list, names: tuple[str, str]) -> str:
    """The one line `make repro` prints."""
    values = compared(a, b)
    differ = {k: v for k, v in values.items() if v[0] != v[1]}
    if not differ:
        return f"reproduced exactly: all {len(values)} metric values of {names[1]} equal {names[0]}'s"
    tests = {k: v for k, v in values.items() if k.rsplit(":", 1)[1].endswith("test_acc")}
    number = lambda v: isinstance(v, int | float) and not isinstance(v, bool)  # noqa: E731
    gaps = {k: abs(v[1] - v[0]) for k, v in tests.items() if number(v[0]) and number(v[1])}
    worst = max(gaps, key=gaps.__getitem__) if gaps else None
    if worst is not None and gaps[worst] > 0:
        where = (
            f"largest test-accuracy difference {gaps[worst]:.2f} points ({worst}: {tests[worst][0]:.2f} -> "
            f"{tests[worst][1]:.2f}) over {len(gaps)} test accuracies"
        )
    else:  # a value only one side has (a metric added since), or one that is not a test accuracy
        key, (old, new) = next(iter(differ.items()))
        where = f"no test accuracy differs ({len(gaps)} in common); first differing: {key}: {old} -> {new}"
    return (
        f"different: {len(differ)} of {len(values)} metric values of {names[1]} differ from {names[0]}'s; "
        f"{where}; {names[0]} made on {machines_line(a_machines)}, {names[1]} on {machines_line(b_machines)}"
    )


def main(argv: list[str] | None = None) -> None:
    """Compare two revisions' metrics and print the verdict line."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("a", nargs="?", default="HEAD", help="the reference revision (default HEAD)")
    ap.add_argument("b", nargs="?", default=WORKSPACE, help=f"the one to check (default: the {WORKSPACE})")
    args = ap.parse_args(argv)
    (a, am), (b, bm) = read(args.a), read(args.b)
    if not a:
        raise TostError(f"{args.a}: holds no metrics to compare with")
    print(verdict(a, b, am, bm, (args.a, args.b)), flush=True)


if __name__ == "__main__":
    run_stage(main, threads=False)
