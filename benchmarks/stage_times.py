"""Wall time of every stage of the default pipeline, run as `dvc repro` runs them, without DVC.

Runs each stage command of dvc.yaml in order (the train and analyze matrices expanded over
`tricks.run`) as its own process, the way DVC starts it, and prints each one's wall time and the
total. For a machine without DVC (a lent GPU machine) and for measuring start-up: a stage's time is
process start, imports, its work, and exit.

Usage: python -m benchmarks.stage_times [--only train@baseline analyze@baseline]
Prints markdown; nothing is asserted (speed is never tested by timing).
"""

from __future__ import annotations

import argparse
import platform
import subprocess
import sys
import time

import torch
import yaml


def commands() -> list[tuple[str, str]]:
    """(stage name, command) in dvc.yaml's order, matrices expanded over params.yaml's tricks.run."""
    with open("dvc.yaml", encoding="utf-8") as f:
        stages = yaml.safe_load(f)["stages"]
    with open("params.yaml", encoding="utf-8") as f:
        variants = yaml.safe_load(f)["tricks"]["run"]
    out = []
    for name, stage in stages.items():
        cmd = " ".join(stage["cmd"].split()).replace("python ", f"{sys.executable} ", 1)
        if "matrix" in stage:
            out += [(f"{name}@{v}", cmd.replace("${item.variant}", v)) for v in variants]
        else:
            out.append((name, cmd))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", nargs="*", help="these stages only (they need their inputs in place)")
    args = ap.parse_args()
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else platform.processor() or "CPU"
    print(f"# {platform.node()} {device} torch {torch.__version__}\n")
    print("| stage | wall time (s) |")
    print("|---|---:|")
    total = 0.0
    for name, cmd in commands():
        if args.only and name not in args.only:
            continue
        start = time.perf_counter()
        subprocess.run(cmd, shell=True, check=True, stdout=subprocess.DEVNULL)
        seconds = time.perf_counter() - start
        total += seconds
        print(f"| {name} | {seconds:.1f} |", flush=True)
    print(f"| **all** | **{total:.1f}** |")


if __name__ == "__main__":
    main()
