"""`make table`: the paper's main table (mask methods × training variants × seeds) from DVC experiments.

Each cell of the sweep (method, sparsity, seed; see params.yaml `report`) is one DVC experiment that
trains every variant of `tricks.run`. Cells that a finished experiment of this commit already answers
are reused; the rest are queued (`dvc exp run --queue`), run with `dvc queue start -j report.jobs`
and waited for. The table is then built from `dvc exp show --json` alone.

Presets (`--preset paper`, `--quick`) are params overrides in presets/*.yaml, applied in order on top
of params.yaml and passed to each experiment with `-S`; params.yaml itself is never edited.
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path
from typing import Any

import yaml

from stages._common import PARAMS, run_stage
from tost import config, sweep
from tost.errors import ConfigError, TostError
from tost.table import aggregate, gain_heatmap, sparsity_plot, to_markdown, write_outputs

log = logging.getLogger(__name__)
PRESETS = Path("presets")


def load_yaml(path: Path, what: str) -> dict[str, Any]:
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        known = ", ".join(sorted(p.stem for p in PRESETS.glob("*.yaml")))
        raise ConfigError(f"{what} {path}: not found (presets: {known})") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{what} {path}: not valid YAML: {str(err).splitlines()[0]}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{what} {path}: must be a mapping of params.yaml sections")
    return raw


def preset_path(name: str) -> Path:
    path = Path(name)
    return path if path.suffix in (".yaml", ".yml") else PRESETS / f"{name}.yaml"


def worker_env(jobs: int) -> dict[str, str]:
    """Share the CPU between the parallel experiments instead of oversubscribing it `jobs` times."""
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // jobs)))
    env.setdefault("TOST_GPU_LOCK_DIR", str(Path(".dvc/tmp/tost-gpu-slots").resolve()))
    return env


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--preset", action="append", default=[], help="presets/NAME.yaml or a YAML path (repeatable)"
    )
    ap.add_argument(
        "--quick", action="store_true", help="apply the quick preset last: embedded data, tiny sizes"
    )
    ap.add_argument("--jobs", type=int, help="experiments at once (default: report.jobs)")
    ap.add_argument("--no-run", action="store_true", help="only tabulate experiments that already exist")
    ap.add_argument(
        "--all-commits", action="store_true", help="also reuse earlier commits' experiments (older code)"
    )
    ap.add_argument(
        "--dry-run", action="store_true", help="print what would be reused and queued, run nothing"
    )
    ap.add_argument("--out", help="output prefix (default metrics/table, or metrics/table-<presets>)")
    ap.add_argument("--poll", type=float, default=10.0, help="seconds between queue status checks")
    args = ap.parse_args(argv)

    config.load(PARAMS)  # a broken params.yaml is reported as such, before any preset is applied
    workspace = yaml.safe_load(PARAMS.read_text(encoding="utf-8"))
    presets = [*args.preset, *(["quick"] if args.quick else [])]
    target = workspace
    for name in presets:
        path = preset_path(name)
        target = sweep.override(target, sweep.flatten(load_yaml(path, "preset")), f"preset {path}")
    params = config.parse(target)
    variants = list(params.tricks.run)
    if "baseline" not in variants:
        raise ConfigError("params.yaml: tricks.run: the table compares every variant with baseline; add it")
    report = params.report
    jobs = args.jobs or report.jobs
    if jobs < 1:
        raise ConfigError(f"--jobs must be >= 1, got {jobs}")
    stem = args.out or "metrics/table" + "".join(f"-{Path(n).stem}" for n in presets)

    cells = sweep.plan(target)
    found = sweep.match(cells, sweep.experiments(sweep.run_dvc, args.all_commits), variants, report.metric)
    missing = [c for c in cells if c.name not in found]
    log.info(
        "table: %d experiments (%d methods × %d sparsities × %d seeds), %d found, %d to run, %d at once",
        len(cells), len(report.methods), len(report.sparsities), len(report.seeds),
        len(found), len(missing), jobs,
    )  # fmt: skip
    if args.dry_run:
        for cell in cells:
            if cell.name in found:
                print(f"reuse  {cell.name}  <- experiment {found[cell.name][0].name}")
            else:
                overrides = " ".join(sweep.set_args(workspace, cell.params))
                print(f"queue  dvc exp run --queue -n {cell.name} {overrides}")
        return
    if missing and not args.no_run:
        pending = sweep.enqueue(sweep.run_dvc, missing, workspace, sweep.experiments(sweep.run_dvc))
        env = worker_env(jobs)
        sweep.start_queue(jobs, env=env)
        final = sweep.wait(lambda a: sweep.run_dvc(a, env=env), pending, args.poll)
        for name, state in final.items():
            if state == "Failed":
                log.error("table: experiment %s failed; its log: dvc queue logs %s", name, name)
        exps = sweep.experiments(sweep.run_dvc, args.all_commits)
        found = sweep.match(cells, exps, variants, report.metric)

    runs = [found[c.name][1] for c in cells if c.name in found]
    if not runs:
        raise TostError("no finished experiment answers any cell of the table; run without --no-run")
    df = aggregate(runs, variants, report.methods)
    m, d = params.model, params.data
    title = f"{m.arch} (width {m.width}) on {d.name}, {params.train.epochs} epochs"
    md = to_markdown(df, variants, report.methods, title)
    write_outputs(df, md, Path(f"{stem}.csv"), Path(f"{stem}.md"))
    gain_heatmap(df, variants, report.methods, Path(f"{stem}-gain.png"))
    if len(report.sparsities) > 1:
        best = "tost" if "tost" in variants else variants[-1]
        sparsity_plot(df, report.methods, Path(f"{stem}-sparsity.png"), ["baseline", best])
    print(md)
    log.info("table: wrote %s.md, %s.csv, %s-gain.png", stem, stem, stem)
    if absent := [c.name for c in cells if c.name not in found]:
        raise TostError(
            f"{len(absent)} of {len(cells)} experiments did not finish (first: {absent[0]}); their cells "
            "show as missing. See `dvc queue logs NAME`, fix, and rerun: finished ones are reused"
        )


if __name__ == "__main__":
    run_stage(main)
