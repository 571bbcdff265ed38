"""`python -m sweep` (`make table`): the paper's table, mask methods × variants × seeds, from DVC experiments.

Each cell of the sweep (method, sparsity, seed; see params.yaml `report`) is one DVC experiment that
trains every variant of `tricks.run`. Cells that a finished experiment of this commit already answers
are reused; the rest run through an executor (`sweep.executor`): DVC's local queue (`dvc queue start
-j report.jobs`), or with `--executor slurm` one SLURM job per cell (`sweep.slurm`). The table is then
built from `dvc exp show --json`, whichever executor ran the experiments, and with `--all-commits`
from the experiments earlier tables archived in git (`sweep.archive`, `metrics/experiments/`).
"""

from __future__ import annotations

import argparse
import logging
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import yaml

from stages._common import PARAMS, run_stage
from sweep import archive, dvc, plan
from sweep.executor import Executor, LocalQueue, Order, cores, default_jobs
from sweep.slurm import Slurm, with_cpus
from sweep.table import aggregate, gain_heatmap, sparsity_plot, to_markdown, write_outputs
from tost import config
from tost.errors import ConfigError, TostError

log = logging.getLogger("sweep")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line; presets and the quick flag pick the params, the rest how to run."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", action="append", default=[], help="presets/NAME.yaml or a path (repeatable)")
    ap.add_argument("--quick", action="store_true", help="apply the quick preset last: embedded data, tiny")
    ap.add_argument("--jobs", type=int, help="experiments at once (default: report.jobs)")
    ap.add_argument(
        "--executor", choices=("local", "slurm"), default="local",
        help="local: DVC's queue on this machine; slurm: one SLURM job per experiment (report.slurm)",
    )  # fmt: skip
    ap.add_argument("--no-run", action="store_true", help="only tabulate experiments that already exist")
    ap.add_argument(
        "--all-commits",
        action="store_true",
        help="also reuse earlier commits' experiments and the archived ones",
    )
    ap.add_argument("--dry-run", action="store_true", help="print what would be reused and queued")
    ap.add_argument(
        "--set-args", action="store_true",
        help="print the presets' -S arguments: dvc exp run $(python -m sweep --preset X --set-args)",
    )  # fmt: skip
    ap.add_argument("--out", help="output prefix (default metrics/table, or metrics/table-<presets>)")
    ap.add_argument("--poll", type=float, default=10.0, help="seconds between queue status checks")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """Plan the cells, reuse what exists, run the rest through DVC's queue, write the table."""
    args = parse_args(argv)
    config.load(PARAMS)  # a broken params.yaml is reported as such, before any preset is applied
    workspace = yaml.safe_load(PARAMS.read_text(encoding="utf-8"))
    warn_if_not_head(workspace)
    presets = [*args.preset, *(["quick"] if args.quick else [])]
    target = plan.apply_presets(workspace, presets)
    params = config.parse(target)
    if args.set_args:
        print(" ".join(plan.set_args(workspace, target)))  # no spaces inside: fit for $(...)
        return
    variants, report = list(params.tricks.run), params.report
    if "baseline" not in variants:
        raise ConfigError("params.yaml: tricks.run: the table compares every variant with baseline; add it")
    if args.jobs is not None and args.jobs < 1:  # an explicit --jobs 0 is refused, not ignored
        raise ConfigError(f"--jobs must be >= 1, got {args.jobs}")
    jobs = args.jobs or report.jobs or default_jobs(params.train.threads, cores())
    stem = args.out or "metrics/table" + "".join(f"-{Path(n).stem}" for n in presets)

    cells = plan.plan(target)
    kept = {a.experiment.name: a for a in archive.load()} if args.all_commits else {}
    found = answered(cells, args.all_commits, kept, variants, report.metric)
    missing = [c for c in cells if c.name not in found]
    log.info(
        "table: %d experiments (%d methods × %d sparsities × %d seeds), %d found, %d to run, %d at once",
        len(cells), len(report.methods), len(report.sparsities), len(report.seeds),
        len(found), len(missing), jobs,
    )  # fmt: skip
    if args.dry_run:
        for cell in cells:
            if cell.name in found and found[cell.name][1].cut:
                print(f"cut    {cell.name}  (recorded: {found[cell.name][1].cut})")
            elif cell.name in found:
                print(f"reuse  {cell.name}  <- experiment {found[cell.name][0].name}")
            else:
                overrides = " ".join(plan.set_args(workspace, cell.params))
                print(f"queue  dvc exp run --queue -n {cell.name} {overrides}")
        return
    if missing and not args.no_run:
        leads = plan.leads(missing) if params.dense.epochs > 0 else set()
        orders = [Order(c.name, tuple(plan.set_args(workspace, c.params)), c.name in leads) for c in missing]
        by_name = {c.name: c for c in missing}
        for failure in executor(args, params, jobs).run(orders):
            if not failure.cut:
                log.error("table: experiment %s", failure.line())
                continue
            log.warning("table: %s: its mask cuts the network, recorded as a result", failure.name)
            archive.save_cut(failure.name, by_name[failure.name].params, failure.last_line)
            kept[failure.name] = next(a for a in archive.load() if a.experiment.name == failure.name)
        found = answered(cells, args.all_commits, kept, variants, report.metric)
    write_table(cells, found, params, stem, presets, kept)


def answered(cells: list[plan.Cell], all_commits: bool, kept: dict, variants: list[str], metric: str) -> dict:
    """Cell name -> (Experiment, Run) for the cells already answered.

    DVC's finished experiments come first, then the archive's (`kept`), then the cells whose mask
    was recorded to cut the network.
    """
    exps = [*dvc.experiments(dvc.run_dvc, all_commits), *(a.experiment for a in kept.values() if not a.cut)]
    cut = [(a.experiment, a.cut) for a in kept.values() if a.cut]
    return {**plan.match_cut(cells, cut), **plan.match(cells, exps, variants, metric)}


def reader(exp: dvc.Experiment, kept: dict[str, archive.Archived]) -> Callable[[str], str | None]:
    """Where `exp`'s commit files are read: the archive's kept parts, or git for a live experiment."""
    a = kept.get(exp.name)
    return a.read if a is not None and a.experiment is exp else dvc.file_at(exp.rev)


def warn_if_not_head(workspace: dict) -> None:
    """One line naming the keys in which the workspace's params.yaml differs from HEAD's, if any.

    Every experiment the sweep plans starts from the workspace's params (a `dvc exp run` leaves its
    own there), so a left-over `prune.method: file` would silently shape the whole table.
    """
    proc = subprocess.run(["git", "show", "HEAD:params.yaml"], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        return  # not a git checkout, or nothing committed: nothing to compare with
    if keys := plan.changed_keys(yaml.safe_load(proc.stdout) or {}, workspace):
        shown = ", ".join(keys[:8]) + (f" and {len(keys) - 8} more" if len(keys) > 8 else "")
        print(
            f"warning: params.yaml differs from HEAD in {shown}; the experiments build on the workspace's "
            "(`git checkout params.yaml` builds on HEAD's)",
            file=sys.stderr, flush=True,
        )  # fmt: skip


def executor(args: argparse.Namespace, params: config.Params, jobs: int) -> Executor:
    """The executor the command line asks for, configured from the report section."""
    report = params.report
    if args.executor == "slurm":
        cfg = with_cpus(report.slurm, params.train.threads, report.per_gpu)
        return Slurm(cfg, report.per_gpu, Path.cwd(), poll=args.poll)
    return LocalQueue(jobs, report.per_gpu, poll=args.poll, run_dvc=dvc.run_dvc)


def write_table(
    cells: list[plan.Cell], found: dict, params: config.Params, stem: str, presets: list[str], kept: dict
) -> None:
    """The markdown, CSV and plots of every answered cell; an error names the unanswered ones.

    Each answered cell's experiment is archived (`sweep.archive`) so that a later sitting, in a clone
    without this one's experiment refs, still finds it.
    """
    answered = [found[c.name] for c in cells if c.name in found]
    runs = [plan.with_machines(run, reader(exp, kept)) for exp, run in answered]
    for exp, _ in answered:
        if exp.name not in kept or kept[exp.name].experiment is not exp:
            archive.save(exp, dvc.file_at(exp.rev))
    if not runs:
        raise TostError("no finished experiment answers any cell of the table; run without --no-run")
    variants, report = list(params.tricks.run), params.report
    df = aggregate(runs, variants, report.methods)
    m, d = params.model, params.data
    setting = f"{m.arch} (width {m.width}) on {d.name}, {params.train.epochs} epochs"
    title = setting + (f" (presets: {', '.join(presets)})" if presets else "")
    md = to_markdown(df, variants, report.methods, title, report.metric)
    write_outputs(df, md, Path(f"{stem}.csv"), Path(f"{stem}.md"))
    written = [f"{stem}.md", f"{stem}.csv"]
    if len(variants) > 1:  # gains over baseline need a second variant
        gain_heatmap(df, variants, report.methods, Path(f"{stem}-gain.png"))
        written.append(f"{stem}-gain.png")
    if len(report.sparsities) > 1:
        best = "tost" if "tost" in variants else variants[-1]
        sparsity_plot(df, report.methods, Path(f"{stem}-sparsity.png"), ["baseline", best])
    print(md)
    log.info("table: wrote %s", ", ".join(written))
    if absent := [c.name for c in cells if c.name not in found]:
        raise TostError(
            f"{len(absent)} of {len(cells)} experiments are missing (first: {absent[0]}): failed (listed "
            "above) or not run (--no-run); their cells show as missing. Rerun: finished ones are reused"
        )


if __name__ == "__main__":
    run_stage(main, threads=False)
