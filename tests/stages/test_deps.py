"""dvc.yaml tells the truth about code: each stage depends on exactly the project files it imports.

A stage's code deps are the import closure of `stages/<name>.py` inside this project (tost/, stages/,
sweep/), computed from the source: every `import` and `from ... import`, at any depth of the file
(a function-level import can run), except under `if TYPE_CHECKING:`, plus the `__init__.py` of every
package on the way, which Python executes too. One kind of edge is not followed: `tost/config.py`
imports the registries (datasets, models, methods, tricks) only to validate names and option
schemas, which cannot change a stage's result; a stage that uses a registry imports it itself.

The test fails on a file the stage imports that dvc.yaml does not list (an edit to it would not rerun
the stage) and on a listed code file it does not import (an edit would rerun it for nothing), and
prints the exact list to paste.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT

PACKAGES = ("tost", "stages", "sweep")
# Edges not followed: (importing module, imported module) pairs that only validate names.
NAME_CHECKS = {
    ("tost.config", m) for m in ("tost.datasets", "tost.models", "tost.sparsity.methods", "tost.tricks")
}


def module_file(name: str) -> Path | None:
    """The project file that defines module `name`, or None for anything outside the project."""
    if name.split(".")[0] not in PACKAGES:
        return None
    base = ROOT.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _type_checking(node: ast.AST) -> bool:
    test = getattr(node, "test", None)
    return isinstance(node, ast.If) and (
        (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING")
        or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")
    )


def imported(path: Path) -> set[str]:
    """Modules a file imports (anywhere but under `if TYPE_CHECKING:`), `from a import b` giving a.b if
    that is a module of its own, else a."""
    out: set[str] = set()

    def visit(node: ast.AST) -> None:
        if _type_checking(node):
            return
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                out.add(full if module_file(full) is not None else node.module)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text(encoding="utf-8")))
    return out


def _with_parents(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts) + 1)]


def closure(module: str) -> set[Path]:
    """Project files executed when `module` is imported."""
    seen: set[str] = set()
    todo = [module]
    while todo:
        name = todo.pop()
        for part in _with_parents(name):
            if part in seen or module_file(part) is None:
                continue
            seen.add(part)
            todo += [m for m in imported(module_file(part)) if (part, m) not in NAME_CHECKS]
    return {module_file(m).relative_to(ROOT) for m in seen}


def code_deps(stage: dict) -> set[Path]:
    """The stage's deps that are project code, directories expanded to their .py files."""
    out: set[Path] = set()
    for dep in stage.get("deps", []):
        path = ROOT / dep
        if dep.split("/")[0] not in PACKAGES:
            continue
        files = sorted(path.rglob("*.py")) if path.is_dir() else [path]
        out.update(f.relative_to(ROOT) for f in files)
    return out


STAGES = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]


@pytest.mark.parametrize("name", sorted(STAGES))
def test_stage_code_deps_are_its_import_closure(name):
    want = closure(f"stages.{name}")
    have = code_deps(STAGES[name])
    listing = "\n".join(f"      - {p.as_posix()}" for p in sorted(want))
    assert not want - have, (
        f"dvc.yaml stage {name} misses {sorted(map(str, want - have))}; its deps:\n{listing}"
    )
    assert not have - want, f"dvc.yaml stage {name} lists unused {sorted(map(str, have - want))}"


def test_the_closure_sees_nested_and_from_imports_but_not_type_checking(tmp_path, monkeypatch):
    closed = closure("stages.train")
    assert Path("tost/train.py") in closed and Path("tost/__init__.py") in closed
    assert Path("tost/sparsity/methods/snip.py") not in closed  # reached only through config's names
    assert Path("stages/_slots.py") in closed  # imported inside a function of stages/_common.py
    assert Path("tost/tricks/lrsi.py") in closed  # the package __init__ of tost.tricks runs


NOT_RUN_CACHED = {"check", "report"}  # cheap, and their plain uncached outs (params.ok, the table) are wanted


@pytest.mark.parametrize(
    "stage", sorted(set(yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]) - NOT_RUN_CACHED)
)
def test_stages_that_train_can_come_from_the_run_cache(stage):
    """DVC saves no run-cache entry for a stage with a plain `outs:` entry marked `cache: false` (only
    metrics and plots may be uncached), and then trains the dense network of a seed again for every
    experiment. So every plain out of these stages is cached."""
    outs = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"][stage].get("outs", [])
    uncached = [
        next(iter(o)) for o in outs if isinstance(o, dict) and next(iter(o.values())).get("cache") is False
    ]
    assert not uncached, f"{stage}: {uncached} would keep DVC's run-cache from restoring the stage"


@pytest.mark.parametrize(("package", "never"), [("tost", ("stages", "sweep")), ("stages", ("sweep",))])
def test_the_layers_import_one_way(package, never):
    """sweep/ may use stages/' glue helpers and tost/; stages/ only tost/; tost/ neither (DESIGN.md)."""
    for path in sorted((ROOT / package).rglob("*.py")):
        wrong = {m for m in imported(path) if m.split(".")[0] in never}
        assert not wrong, f"{path.relative_to(ROOT)} imports {sorted(wrong)}"
