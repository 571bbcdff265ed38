"""One task of a SLURM sweep (`python -m sweep.job SPEC ARRAY INDEX`, run by `sweep.slurm`'s sbatch).

Each experiment of the task gets a workspace of its own, a clone of the checkout at the submitting
commit with its uncommitted changes applied, where `dvc exp run` does exactly what DVC's local queue
would do in its temporary workspace. The finished experiment is pushed back to the checkout
(`dvc exp push`, git refs only: the DVC cache is the checkout's own, shared), so jobs running at once
never write the same files, and git's per-ref locks keep their pushes apart.

The last thing written for an experiment is `cells/NAME.json` with the exit code: the submitter's
record of success, which SLURM without accounting does not keep.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO, Any

from stages import _slots as slots


def steps(spec: dict[str, Any], name: str, args: list[str], work: Path) -> list[tuple[list[str], Path]]:
    """The commands that make experiment `name` in `work` and hand it to the checkout, in order."""
    dvc = [spec["python"], "-m", "dvc"]
    return [
        (["git", "clone", "--quiet", "--shared", "--no-checkout", spec["checkout"], str(work)], work.parent),
        (["git", "checkout", "--quiet", "--detach", spec["rev"]], work),
        ([*dvc, "cache", "dir", "--local", spec["cache"]], work),
        ([*dvc, "exp", "run", "--name", name, *args], work),
        ([*dvc, "exp", "push", "--force", "--no-cache", "origin", name], work),
    ]


def prepare(spec: dict[str, Any], work: Path) -> None:
    """After the checkout: the uncommitted changes, the checkout's local DVC config, its data folder."""
    if spec["patch"]:
        patch = work.parent / f"{work.name}.patch"
        patch.write_text(spec["patch"], encoding="utf-8")
        subprocess.run(["git", "apply", "--binary", str(patch)], cwd=work, check=True)
        patch.unlink()
    if spec["config_local"]:
        (work / ".dvc" / "config.local").write_text(spec["config_local"], encoding="utf-8")
    if spec["data"]:  # raw downloads (CIFAR, Fashion-MNIST) stay where they are: no copy per job
        (work / "data").symlink_to(spec["data"], target_is_directory=True)


def run_cell(spec: dict[str, Any], cell: dict[str, Any], env: dict[str, str]) -> int:
    """Make one experiment; its output goes to cells/NAME.log, its exit code to cells/NAME.json."""
    folder = Path(spec["folder"])
    name = cell["name"]
    work = folder / "work" / name
    shutil.rmtree(work, ignore_errors=True)
    rc = 0
    with open(folder / "cells" / f"{name}.log", "w", encoding="utf-8") as out:
        for i, (cmd, cwd) in enumerate(steps(spec, name, cell["args"], work)):
            rc = _step(cmd, cwd, env, out)
            if rc == 0 and i == 1:
                try:
                    prepare(spec, work)
                except (OSError, subprocess.CalledProcessError) as err:
                    print(f"preparing the workspace failed: {err}", file=out, flush=True)
                    rc = 1
            if rc != 0:
                print(f"failed (exit {rc}): {' '.join(cmd)}", file=out, flush=True)
                break
    if rc == 0:
        shutil.rmtree(work, ignore_errors=True)  # a failed one stays, for a look at what went wrong
    result = folder / "cells" / f"{name}.json"
    tmp = result.with_suffix(".tmp")
    tmp.write_text(json.dumps({"rc": rc}), encoding="utf-8")
    tmp.replace(result)
    return rc


def _step(cmd: list[str], cwd: Path, env: dict[str, str], out: IO[str]) -> int:
    """Run one command into the log, timed: what a job spends besides `dvc exp run` is our overhead."""
    print("$ " + " ".join(cmd), file=out, flush=True)
    start = time.monotonic()
    rc = subprocess.run(cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, check=False).returncode
    print(f"({time.monotonic() - start:.1f} s, exit {rc})", file=out, flush=True)
    return rc


def task_env(spec: dict[str, Any], folder: Path) -> dict[str, str]:
    """GPU slots private to this task's allocation; each experiment computes with `train.threads`."""
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(spec["python"]).parent), env.get("PATH", "")])
    task = env.get("SLURM_JOB_ID", str(os.getpid()))
    env[slots.LOCK_DIR] = str(folder / "slots" / task)
    env[slots.PER_GPU] = str(spec["per_gpu"])
    return env


def main(argv: list[str]) -> int:
    """Run every experiment of one array task at once; fail the task when any of them failed."""
    spec_path, array, index = argv
    spec = json.loads(Path(spec_path).read_text(encoding="utf-8"))
    cells = spec["arrays"][array][int(index)]
    env = task_env(spec, Path(spec["folder"]))
    print(
        f"task {array}[{index}] on {os.uname().nodename}: {', '.join(c['name'] for c in cells)}", flush=True
    )
    with ThreadPoolExecutor(len(cells)) as pool:
        codes = list(pool.map(lambda cell: run_cell(spec, cell, env), cells))
    for cell, rc in zip(cells, codes, strict=True):
        print(f"{cell['name']}: {'done' if rc == 0 else f'failed (exit {rc})'}", flush=True)
    return 0 if not any(codes) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
