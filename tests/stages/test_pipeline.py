"""The DVC workflows a user relies on, run for real on a tiny copy of this repository.

The copy holds the working tree's files (tracked and untracked, not ignored), its own git repo and
DVC cache, and a params.yaml shrunk so that the whole pipeline runs in seconds.
"""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from sweep import offline_plots
from sweep.dvc import parse_exp_show
from tests.conftest import ROOT
from tests.tinyrepo import copy, env, run, tiny_params

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    dest = tmp_path_factory.mktemp("repo")
    copy(dest, tiny_params(yaml.safe_load((ROOT / "params.yaml").read_text())))
    run(dest, "dvc", "repro")
    run(dest, "git", "add", "-A")
    run(dest, "git", "commit", "-qm", "first repro")
    return dest


def _variants(repo: Path) -> list[str]:
    return yaml.safe_load((repo / "params.yaml").read_text())["tricks"]["run"]


def test_repro_builds_the_result_table(repo):
    table = (repo / "metrics" / "results.md").read_text()
    for v in _variants(repo):
        assert f"| {v} |" in table
        m = json.loads((repo / "metrics" / "train" / f"{v}.json").read_text())
        detail = json.loads((repo / "metrics" / "detail" / "train" / f"{v}.json").read_text())
        row = next(line for line in table.splitlines() if line.startswith(f"| {v} |"))
        # the headline, the full record and the table's row hold the same numbers
        assert (
            m["test_acc"] == detail["test_acc"]
            and f"| {m['test_acc']:.2f} | {m['final_test_acc']:.2f} |" in row
        )
        assert m["sparsity"] == pytest.approx(0.9, abs=1e-3)
    assert (repo / "metrics" / "plots" / "accuracy.png").stat().st_size > 1000
    assert (repo / "artifacts" / "mask.pt").is_file()
    assert "| dense | — |" in table  # the dense reference row
    assert json.loads((repo / "metrics" / "detail" / "dense.json").read_text())["epochs"] == 1


def test_mask_sparsity_matches_request_within_one_weight_per_layer(repo):
    m = json.loads((repo / "metrics" / "detail" / "mask.json").read_text())
    assert m["total"] - m["kept"] == round(m["requested_sparsity"] * m["total"])  # a global top-k: exact
    assert m["method"] == "random"
    headline = json.loads((repo / "metrics" / "mask.json").read_text())
    assert headline == {
        "method": "random",
        "requested_sparsity": 0.9,
        "sparsity": m["sparsity"],
        "empty_layers": 0,
    }


def test_second_repro_does_nothing(repo):
    out = run(repo, "dvc", "repro").stdout
    assert "Running stage" not in out


def test_changing_sparsity_reruns_mask_and_after_but_not_data(repo):
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["prune"]["sparsity"] = 0.8
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    try:
        out = run(repo, "dvc", "repro").stdout
        assert "Running stage 'mask'" in out
        assert "Running stage 'data'" not in out
        for v in _variants(repo):
            assert f"Running stage 'train@{v}'" in out
        assert json.loads((repo / "metrics" / "mask.json").read_text())["sparsity"] == pytest.approx(
            0.8, abs=1e-3
        )
        diff = run(repo, "dvc", "metrics", "diff", "--json").stdout
        changed = json.loads(diff)
        assert "metrics/mask.json" in changed
    finally:
        run(repo, "git", "checkout", "--", ".")
        run(repo, "dvc", "checkout", "-q", check=False)


def test_the_dense_stage_runs_under_dvc_with_no_dense_epochs(repo):
    """random and snip prune the initialisation (dense.epochs 0, as the budget and sparsity studies do):
    the stage must still write every output dvc.yaml declares, the live file included."""
    raw = yaml.safe_load((repo / "params.yaml").read_text())
    raw["dense"]["epochs"] = 0
    (repo / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    try:
        out = run(repo, "dvc", "repro", "-s", "dense").stdout
        assert "Running stage 'dense'" in out
        assert json.loads((repo / "metrics" / "live" / "dense" / "metrics.json").read_text()) == {}
        assert not (repo / "artifacts" / "dense" / "trained.pt").exists()
    finally:
        run(repo, "git", "checkout", "--", ".")
        run(repo, "dvc", "checkout", "-q", check=False)


def _status(repo: Path) -> set[str]:
    """Stages `dvc status` reports as changed."""
    out = json.loads(run(repo, "dvc", "status", "--json").stdout or "{}")
    return {name.split(":")[-1] for name in out}


@pytest.mark.parametrize(("key", "value", "stale"), [
    ("train.epochs", 3, {"train@baseline", "train@tost"}),  # the mask and the dense network do not read it
    ("train.nproc", 2, {"train@baseline", "train@tost"}),
    ("train.lr", 0.05, {"dense", "mask", "train@baseline", "train@tost"}),
    ("prune.sparsity", 0.8, {"mask"}),  # the dense network does not depend on prune
    ("dense.epochs", 2, {"dense", "mask"}),
])  # fmt: skip
def test_params_deps_are_the_keys_each_stage_reads(repo, key, value, stale):
    text = (repo / "params.yaml").read_text()
    raw = yaml.safe_load(text)
    section, name = key.split(".")
    raw[section][name] = value
    (repo / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    try:
        changed = _status(repo)
    finally:
        (repo / "params.yaml").write_text(text)
    assert {s for s in changed if s in {"dense", "mask"} or s.startswith("train@")} == stale


def _ran(out: str) -> set[str]:
    """The train@ stages an `exp run` or `repro` ran (not skipped, not restored from the run-cache)."""
    return {line.split("'")[1] for line in out.splitlines() if line.startswith("Running stage 'train@")}


def test_a_variant_retrains_only_when_what_it_trains_with_changes(repo):
    """Adding a variant trains only it; moving one trick's window retrains only the variants that use
    the trick (each train@ depends on its variant's trick options, not on the whole tricks section)."""
    _clean(repo)
    try:
        added = run(repo, "dvc", "exp", "run", "-n", "add-gs", "-S", "tricks.run=[baseline,ghost_skip,tost]")
        assert _ran(added.stdout) == {"train@ghost_skip"}, added.stdout
        moved = run(repo, "dvc", "exp", "run", "-n", "gs-end", "-S", "tricks.ghost_skip.end=0.4")
        assert _ran(moved.stdout) == {"train@ghost_skip", "train@tost"}, moved.stdout
        assert "Stage 'train@baseline' didn't change, skipping" in moved.stdout
        back = run(repo, "dvc", "exp", "run", "-n", "gs-back", "-S", "tricks.ghost_skip.end=0.5")
        assert _ran(back.stdout) == set() and "is cached - skipping run" in back.stdout  # the run-cache's
    finally:
        _clean(repo, forget=("add-gs", "gs-end", "gs-back"))


def test_the_files_of_a_variant_no_longer_trained_are_gone(repo):
    """After `tricks.run` shrinks, the dropped variant's metrics are neither left in the workspace nor
    committed into the experiment (DVC alone leaves them: no stage owns them any more)."""
    _clean(repo)
    try:
        assert (repo / "metrics/train/tost.json").exists()
        run(repo, "dvc", "exp", "run", "-n", "only-baseline", "-S", "tricks.run=[baseline]")
        gone = ["metrics/train/tost.json", "metrics/analysis/tost.json", "metrics/analysis/tost.png",
                "metrics/detail/train/tost.json", "metrics/curves/tost.csv",
                "metrics/live/train/tost/metrics.json"]  # fmt: skip
        assert not [f for f in gone if (repo / f).exists()]
        (rev,) = [e.rev for e in parse_exp_show(run(repo, "dvc", "exp", "show", "--json").stdout)
                  if e.name == "only-baseline"]  # fmt: skip
        files = run(repo, "git", "ls-tree", "-r", "--name-only", rev, "metrics/").stdout.split()
        assert "metrics/train/baseline.json" in files and not set(gone) & set(files)
    finally:
        _clean(repo, forget=("only-baseline",))


def _running(repo: Path, name: str) -> tuple[str | None, dict]:
    """The executor state of experiment `name` and the live metrics `dvc exp show --json` has of it.

    An `exp show` that races the queue's commit of the finished experiment can hang for good in DVC
    3 (a collecting thread dies on pygit2's "object not found", its reader waits forever: CI saw
    one exceed 900 s), so a poll gets 60 s and one that fails or hangs is just no reading.
    """
    try:
        shown = run(repo, "dvc", "exp", "show", "--json", timeout=60).stdout
    except (subprocess.TimeoutExpired, AssertionError):
        return None, {}
    for top in json.loads(shown):
        for exp in top.get("experiments") or []:
            if exp.get("name") == name:
                metrics = ((exp.get("revs") or [{}])[0].get("data") or {}).get("metrics") or {}
                live = (metrics.get("metrics/live/train/baseline/metrics.json") or {}).get("data") or {}
                return (exp.get("executor") or {}).get("state"), live.get("live", {}).get("baseline", {})
    return None, {}


def test_a_running_experiment_shows_its_epochs_in_dvc_exp_show(repo):
    """DVCLive rewrites metrics/live/train/<variant>/metrics.json after every epoch; `dvc exp show`
    reads it from a queued experiment's temporary workspace while it runs; the headline is unchanged."""
    _clean(repo)
    epochs, seen = 80, []
    try:
        run(repo, "dvc", "exp", "run", "--queue", "-n", "live-run", "-S", f"train.epochs={epochs}",
            "-S", "tricks.run=[baseline]")  # fmt: skip
        subprocess.run([sys.executable, "-m", "dvc", "queue", "start"], cwd=repo, env=env(), check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        deadline, state = time.monotonic() + 600, None
        while time.monotonic() < deadline and state not in ("success", "failed"):
            state, live = _running(repo, "live-run")
            if state == "running" and live:
                seen.append((live["epoch"], live["eta_s"]))
            time.sleep(0.3)
        assert state == "success", state
        assert any(0 < epoch < epochs and eta > 0 for epoch, eta in seen), seen  # mid-run, with an ETA
        (rev,) = [e.rev for e in parse_exp_show(run(repo, "dvc", "exp", "show", "--json").stdout)
                  if e.name == "live-run"]  # fmt: skip
        show = lambda path, at=rev: json.loads(run(repo, "git", "show", f"{at}:{path}").stdout)  # noqa: E731
        final = show("metrics/live/train/baseline/metrics.json")["live"]["baseline"]
        curve = pd.read_csv(
            io.StringIO(run(repo, "git", "show", f"{rev}:metrics/curves/baseline.csv").stdout)
        )
        assert final["epoch"] == epochs == len(curve)
        assert final["val_acc"] == round(curve.val_acc.iloc[-1], 2) and final["eta_s"] == 0
        head = show("metrics/train/baseline.json", "HEAD")
        assert set(show("metrics/train/baseline.json")) == set(head)  # the headline keys are today's
    finally:
        _clean(repo, forget=("live-run",))


def _clean(repo: Path, forget: tuple[str, ...] = ()) -> None:
    """Back to the committed params and outputs (`exp run` leaves its own in the workspace). `forget`
    removes a test's experiments: the later tests' tables and columns must not see them."""
    if forget:
        run(repo, "dvc", "exp", "remove", *forget, check=False)
    run(repo, "touch", "params.yaml")  # a failed `exp run` can leave it changed where git does not look
    run(repo, "git", "checkout", "--", ".")
    run(repo, "dvc", "checkout", "-q", check=False)


# The README's `dvc exp show` for a terminal: each experiment, every variant's test accuracy, the params
# that differ. DVC matches --drop as a full regex over the column names, and --keep would outrank
# --only-changed, so every column but these is dropped and --only-changed removes the equal params.
EXP_SHOW = ("dvc", "exp", "show", "--only-changed", "--drop",
            r"(?!Experiment$|acc\.|seed$|(data|model|dense|prune|train|tricks)\.).*")  # fmt: skip
VIEW_VARIANTS = 6  # the default `tricks.run`; this copy trains fewer, so per-variant counts are scaled up


def _as_if_six_variants(total: int, per_variant: dict[str, int]) -> int:
    """`total` counted on this copy, with each variant's share replaced by six of the largest share."""
    return total - sum(per_variant.values()) + VIEW_VARIANTS * max(per_variant.values())


def test_exp_run_and_the_views_a_researcher_reads(repo):
    """After `dvc repro` and `dvc exp run -S prune.sparsity=...`, what `dvc exp show`, `make exps`,
    `dvc metrics diff` print stays readable (issue 20's bounds, for six variants), `dvc plots show` /
    `dvc plots diff` draw the three plots with every variant's data, and a second experiment of the
    seed takes its dense network from the run-cache."""
    _clean(repo)
    try:
        _views(repo)
    finally:
        _clean(repo)  # `exp run` leaves its params and outputs in the workspace


def _views(repo: Path) -> None:
    # Seed 7 and sparsity 0.85: no other test of this module runs them, so DVC's run-cache has neither
    # the dense network nor the mask, whatever ran before.
    out = run(repo, "dvc", "exp", "run", "-n", "sp85", "-S", "seed=7", "-S", "prune.sparsity=0.85").stdout
    assert "Running stage 'mask'" in out and "Running stage 'dense'" in out
    variants = _variants(repo)

    header = run(repo, "dvc", "exp", "show", "--csv").stdout.splitlines()[0].split(",")
    per_variant = {
        v: sum(f"/{v}.json" in c or f"/{v}.pt" in c or c.startswith(f"live.{v}.") for c in header)
        for v in variants
    }
    assert min(per_variant.values()) >= 2  # its headline metrics and its checkpoint are columns
    # 250 in issue 20; +8: each variant's trick-options file and two code files became deps; +17 (275):
    # DVCLive's live file, three keys a variant and the dense stage, DVCLive's `step` in each, one dep
    assert _as_if_six_variants(len(header), per_variant) <= 275, header

    diff = json.loads(run(repo, "dvc", "metrics", "diff", "HEAD", "sp85", "--all", "--json").stdout)
    rows = {f: len(m) for f, m in diff.items()}
    per_variant = {
        v: sum(n for f, n in rows.items() if f.endswith(f"/{v}.json") or f"/{v}/" in f) for v in variants
    }
    assert _as_if_six_variants(sum(rows.values()), per_variant) <= 120, diff
    for v in variants:  # each variant's accuracy is there: the committed one, and the experiment's
        acc = diff[f"metrics/train/{v}.json"]["test_acc"]
        committed = json.loads(run(repo, "git", "show", f"HEAD:metrics/train/{v}.json").stdout)["test_acc"]
        ran = json.loads((repo / "metrics" / "train" / f"{v}.json").read_text())["test_acc"]  # exp run's
        assert (acc["old"], acc["new"]) == (committed, ran), acc

    text = run(repo, sys.executable, "-m", "sweep.exps", "--width", "160").stdout
    lines = text.splitlines()
    columns = [c.strip() for c in lines[0].split("  ") if c.strip()]
    assert columns[: 2 + len(variants)] == ["experiment", "rev", *variants], text
    assert "prune.sparsity" in columns[2 + len(variants) :]  # a changed param; other tests' exps add more
    assert len(columns) - len(variants) + VIEW_VARIANTS <= 20 and max(map(len, lines)) <= 160
    (row,) = [ln.split() for ln in lines if ln.startswith("sp85 ")]
    acc = json.loads(run(repo, "git", "show", f"{row[1]}:metrics/train/{variants[0]}.json").stdout)[
        "test_acc"
    ]
    assert row[2] == f"{acc:.2f}" and row[columns.index("prune.sparsity")] == "0.85"

    table = run(repo, *EXP_SHOW).stdout  # the README's terminal-sized `dvc exp show`
    lines = table.splitlines()
    missing = [
        v for v in ("baseline", "soft_act", "ghost_skip", "label_smooth", "lrsi", "tost") if v not in variants
    ]
    assert max(map(len, lines)) + sum(len(f"acc.{v}") + 3 for v in missing) <= 160, table  # as with six
    assert "Experiment" in lines[1] and all(f"acc.{v}" in lines[1] for v in variants), table
    assert "prune.sparsity" in lines[1] and "train.lr" not in lines[1], table  # only what differs
    (sp85,) = [ln for ln in lines if "[sp85]" in ln]
    accs = json.loads((repo / "metrics" / "accuracy.json").read_text())["acc"]  # exp run's
    assert f"{accs[variants[0]]:.5g}"[:5] in sp85, (sp85, accs)

    run(repo, "dvc", "plots", "show", "-o", "dvc_plots")
    head = run(repo, "git", "rev-parse", "--short", "HEAD").stdout.strip()
    run(repo, "dvc", "plots", "diff", head, "sp85", "-o", "dvc_diff")
    for html in ((repo / d / "index.html").read_text() for d in ("dvc_plots", "dvc_diff")):
        for title in ("test accuracy by epoch", "dead activations per layer", "kept weights per layer"):
            assert title in html
        for field in ("kept_fraction", *variants):
            assert f'"{field}"' in html  # the data went in, not only the titles
    assert "sp85" in html and head in html  # plots diff: both experiments
    page = repo / "offline.html"  # `make plots`: the libraries inline (stand-ins here), no CDN script
    page.write_text(offline_plots.template({"vega": "/*V*/", "vega-lite": "/*L*/", "vega-embed": "/*E*/"}))
    run(repo, "dvc", "plots", "show", "--html-template", str(page), "-o", "dvc_offline")
    html = (repo / "dvc_offline" / "index.html").read_text()
    assert "cdn.jsdelivr" not in html and "/*E*/" in html and "test accuracy by epoch" in html
    assert '"color": {"field": "field"' in html  # one colour per variant (.dvc/plots/variants.json)
    page.unlink()
    shutil.rmtree(repo / "dvc_offline")
    _clean(repo)

    # The dense network is trained once per seed: an experiment of seed 7 at another sparsity, started
    # from the committed workspace (seed 0), gets it from DVC's run-cache.
    again = run(repo, "dvc", "exp", "run", "-n", "seed7-sp70", "-S", "seed=7", "-S", "prune.sparsity=0.7")
    assert "Stage 'dense' is cached - skipping run" in again.stdout
    assert "Running stage 'dense'" not in again.stdout and "Running stage 'mask'" in again.stdout


def test_dvc_deletes_a_failing_stages_outputs_and_dvc_checkout_brings_them_back(repo):
    """What docs/troubleshooting.md says: under `dvc repro` a failing stage has lost its previous
    outputs (DVC deletes them first), and the DVC cache gives them back."""
    _clean(repo)
    lock = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]["data"]["outs"]
    data_md5 = next(o["md5"] for o in lock if o["path"] == "artifacts/data")
    before = {p.name: p.read_bytes() for p in (repo / "artifacts" / "data").iterdir()}
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["data"].update(name="cifar10", root="no-such-folder", download=False)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    try:
        proc = run(repo, "dvc", "repro", "data", check=False)
        assert proc.returncode != 0 and "no-such-folder" in proc.stdout + proc.stderr
        assert not (repo / "artifacts" / "data").exists()  # DVC removed the outputs before running
    finally:
        _clean(repo)  # git checkout params.yaml, then dvc checkout
    assert {p.name: p.read_bytes() for p in (repo / "artifacts" / "data").iterdir()} == before
    assert data_md5 == yaml.safe_load((repo / "dvc.lock").read_text())["stages"]["data"]["outs"][0]["md5"]


def test_bad_params_fail_with_one_line_before_any_work(repo):
    params_text = (repo / "params.yaml").read_text()
    params = yaml.safe_load(params_text)
    params["prune"]["sparsity"] = 1.5
    params["data"]["val_fraction"] = 0.25  # data would rerun first if validation came late
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    before = (repo / "artifacts" / "data" / "train.pt").stat().st_mtime_ns
    try:
        proc = run(repo, "dvc", "repro", check=False)
        assert proc.returncode != 0
        errors = [
            ln for ln in (proc.stdout + proc.stderr).splitlines() if ln.startswith("error: params.yaml")
        ]
        assert [e.split("; ")[0] for e in errors] == [
            "error: params.yaml: prune.sparsity must be in [0, 1), got 1.5"
        ]
        assert (repo / "artifacts" / "data" / "train.pt").stat().st_mtime_ns == before
    finally:
        (repo / "params.yaml").write_text(params_text)


def test_a_failed_exp_run_says_how_to_get_back_and_that_way_works(repo):
    """A bad `-S` value stays in params.yaml after DVC gives up, hidden from `git status` when it has the
    length of the old one; the error line's recovery brings HEAD's params back and the next run works."""
    _clean(repo)
    try:
        bad = run(repo, "dvc", "exp", "run", "-S", "prune.sparsity=1.5", check=False)
        (line,) = [ln for ln in bad.stderr.splitlines() if ln.startswith("error: params.yaml")]
        assert "`touch params.yaml && git checkout params.yaml` restores HEAD's" in line
        assert "sparsity: 1.5" in (repo / "params.yaml").read_text()
        run(repo, "touch", "params.yaml")
        run(repo, "git", "checkout", "params.yaml")
        assert "sparsity: 1.5" not in (repo / "params.yaml").read_text()
        again = run(repo, "dvc", "repro").stdout  # DVC deleted the failed check stage's outputs
        assert "Running stage 'check'" in again and "Running stage 'mask'" not in again  # only it reruns
        assert _ran(again) == set()
    finally:
        _clean(repo)


def test_table_reuses_experiments_and_queues_the_rest(repo):
    _clean(repo)  # earlier `exp run`s left their params in the workspace
    try:
        _table_reuses_experiments_and_queues_the_rest(repo)
    finally:
        _clean(repo)  # `exp run` and the sweep leave the last experiment's outputs in the workspace


def _table_reuses_experiments_and_queues_the_rest(repo: Path) -> None:
    # A cell the user already ran by hand, under their own name: the table must take it, not rerun it.
    run(repo, "dvc", "exp", "run", "-n", "by-hand", "-S", "prune.method=snip", "-S", "seed=1")
    run(repo, "git", "checkout", "--", ".")  # `exp run` leaves its params in the workspace
    before = set(run(repo, "dvc", "exp", "ls", "--name-only").stdout.split())
    out = run(repo, sys.executable, "-m", "sweep", "--poll", "2").stdout
    assert "2 experiments (1 methods × 1 sparsities × 2 seeds), 1 found, 1 to run" in out
    table = (repo / "metrics" / "table.md").read_text()
    assert "| SNIP |" in table and "(2)" in table
    rows = pd.read_csv(repo / "metrics" / "table.csv", dtype=str)
    assert list(rows.columns[:5]) == ["method", "label", "sparsity", "variant", "n_seeds"]
    names = set(run(repo, "dvc", "exp", "ls", "--name-only").stdout.split())
    assert len(names - before) == 1
    listed = {n for cell in rows["experiments"] for n in cell.split()}
    assert "by-hand" in listed and listed <= names  # every cell traces to an existing experiment
    revs = {r for cell in rows["revs"] for r in cell.split()}
    assert len(revs) == 2 and all(len(r) == 40 for r in revs)  # and to the commit that holds it
    assert (repo / "metrics" / "table-gain.png").stat().st_size > 1000
    again = run(repo, sys.executable, "-m", "sweep", "--poll", "2").stdout
    assert "2 found, 0 to run" in again
    assert set(run(repo, "dvc", "exp", "ls", "--name-only").stdout.split()) == names
