"""Generated bad params: from params.yaml and every preset, keys mutated one to three at a time.

Wrong types, numbers out of range (negative, zero, NaN, inf, huge), unknown keys, missing keys and
broken YAML. `config.parse` must either accept the mutated params, and then hold exactly the values
given, or refuse them with one line that starts with `params.yaml` and names a key it was given;
the `check` stage (what `dvc repro` runs first) must answer a refused file with that line on stderr
and exit code 2, without a traceback. The CI profile keeps this within seconds; set
HYPOTHESIS_PROFILE=thorough for thousands of examples (tests/conftest.py registers both).
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import math
import os
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from stages import check as check_stage
from stages._common import run_stage
from sweep import plan
from tests.conftest import ROOT, one_error_line, repo_params, set_key
from tests.params_helpers import parsed, same
from tost import config
from tost.errors import ConfigError

BASES = {"params.yaml": repo_params()} | {
    p.stem: plan.apply_presets(repo_params(), [p.stem]) for p in sorted((ROOT / "presets").glob("*.yaml"))
}


def leaves(node: Any, prefix: str = "") -> list[str]:
    """Every dotted key whose value is not a mapping (lists are values)."""
    if not isinstance(node, dict):
        return [prefix[:-1]]
    return [k for key, value in node.items() for k in leaves(value, f"{prefix}{key}.")]


BAD = st.one_of(
    st.text(max_size=6),
    st.integers(min_value=-(10**12), max_value=10**12),
    st.sampled_from([0, -1, 1, 10**18, 0.0, -0.5, 1.5, 1e30, math.nan, math.inf, -math.inf]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["nan", "inf", "-inf", "1e-3", "", "snip", "rp", "cuda", "swish"]),
    st.booleans(),
    st.none(),
    st.lists(st.integers(min_value=-3, max_value=300), max_size=3),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)


@st.composite
def mutated(draw: st.DrawFn) -> tuple[dict, list[tuple[str, Any]], list[str]]:
    """A base params mapping with 1-3 keys changed, maybe an unknown key added or a key removed."""
    base = BASES[draw(st.sampled_from(sorted(BASES)))]
    raw = yaml.safe_load(yaml.safe_dump(base))  # a deep copy
    keys = leaves(raw)
    changes = [
        (k, draw(BAD)) for k in draw(st.lists(st.sampled_from(keys), min_size=1, max_size=3, unique=True))
    ]
    for dotted, value in changes:
        set_key(raw, dotted, value)
    named = [k for k, _ in changes]
    extra = draw(st.sampled_from(["none", "unknown", "missing"]))
    if extra == "unknown":
        section = draw(st.sampled_from([s for s in raw if isinstance(raw[s], dict)]))
        raw[section]["not_a_knob"] = 1
        named.append(f"{section}: unknown")
    elif extra == "missing":
        dotted = draw(st.sampled_from(keys))
        *path, last = dotted.split(".")
        node = raw
        for key in path:
            node = node[key]
        node.pop(last, None)
        changes = [(k, v) for k, v in changes if k != dotted]
        named.append(dotted)
    return raw, changes, named


def floats(node: Any) -> list[float]:
    """Every float anywhere in parsed params (sections, option sections, tuples)."""
    if isinstance(node, float):
        return [node]
    if dataclasses.is_dataclass(node):
        return [x for f in dataclasses.fields(node) for x in floats(getattr(node, f.name))]
    if isinstance(node, dict):
        return [x for v in node.values() for x in floats(v)]
    if isinstance(node, tuple | list):
        return [x for v in node for x in floats(v)]
    return []


def names_a_key(message: str, named: list[str]) -> bool:
    """One of the keys the test touched: in full (`prune.sparsity`), or its section and its own name
    (`train: unknown key(s) ['typo']`)."""
    return any(k in message or (k.split(".")[0] in message and k.split(".")[-1] in message) for k in named)


@given(mutated())
def test_params_are_accepted_as_given_or_refused_in_one_line_naming_the_key(case):
    raw, changes, named = case
    try:
        p = config.parse(raw)
    except ConfigError as err:
        message = str(err)
        assert message.startswith("params.yaml") and "\n" not in message, message
        assert names_a_key(message, named), (message, named)
        return
    for dotted, value in changes:
        assert same(value, parsed(p, dotted), dotted), (dotted, value, parsed(p, dotted))
    assert all(math.isfinite(x) for x in floats(p)), p  # never NaN or inf once accepted


def _check_stage(text: str) -> tuple[int, str]:
    """Run the check stage as `python -m stages.check` does, on a params.yaml holding `text`."""
    with tempfile.TemporaryDirectory() as folder:
        cwd = os.getcwd()
        os.chdir(folder)
        err = io.StringIO()
        try:
            Path("params.yaml").write_text(text, encoding="utf-8")
            with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
                try:
                    run_stage(lambda: check_stage.main(["--out", "ok.json"]))
                    code = 0
                except SystemExit as exit_info:
                    code = int(exit_info.code)
        finally:
            os.chdir(cwd)
    return code, err.getvalue()


@given(mutated())
def test_the_check_stage_refuses_bad_params_with_exit_2_and_one_line(case):
    raw, _, _ = case
    try:
        config.parse(raw)
        valid = True
    except ConfigError:
        valid = False
    code, err = _check_stage(yaml.safe_dump(raw))
    if valid:
        assert code == 0 and err == ""
    else:
        assert one_error_line(code, err).startswith("error: params.yaml"), err


def _library_accepts(text: str) -> bool:
    try:
        config.parse(yaml.safe_load(text))
    except (yaml.YAMLError, ConfigError):
        return False
    return True


@given(st.text(max_size=40))
def test_broken_yaml_is_one_line(text):
    full = yaml.safe_dump(repo_params()) + "\n" + text
    code, err = _check_stage(full)
    assert code == (0 if _library_accepts(full) else 2), err  # the stage's verdict is the library's
    if code == 2:
        assert one_error_line(code, err).startswith("error: params.yaml"), err
    else:
        assert err == ""


@pytest.mark.parametrize(("dotted", "value"), [
    ("train.lr", float("nan")), ("train.weight_decay", "nan"), ("tricks.label_smooth.epsilon", float("inf")),
    ("prune.sparsity", float("nan")),
])  # fmt: skip
def test_nan_and_inf_are_refused(dotted, value):
    """The generated inputs found these accepted (NaN passes every range check)."""
    raw = repo_params()
    set_key(raw, dotted, value)
    with pytest.raises(ConfigError, match=f"{dotted}: must be a finite number"):
        config.parse(raw)


def test_milestones_past_the_last_epoch_are_refused_for_multistep():
    raw = repo_params()
    raw["train"].update(schedule="multistep", epochs=10, milestones=[5, 15])
    with pytest.raises(ConfigError, match=r"train.milestones must lie within the 10 epochs"):
        config.parse(raw)
    raw["train"]["schedule"] = "cosine"  # cosine ignores milestones
    config.parse(raw)


INCONSISTENT = {  # two keys that are each valid alone; the line must name both
    "milestones-past-epochs": ({"train.schedule": "multistep", "train.epochs": 10,
                                "train.milestones": [5, 15]}, ["train.milestones", "10 epochs"]),
    "rewind-past-dense": ({"prune.method": "lt", "dense.epochs": 1, "prune.lt.rewind_epoch": 2},
                          ["prune.lt.rewind_epoch=2", "dense.epochs=1"]),
    "training-method-without-dense": ({"prune.method": "gmp", "dense.epochs": 0},
                                      ["prune.method=gmp", "dense.epochs"]),
    "batch-not-a-multiple-of-nproc": ({"train.nproc": 3, "train.batch_size": 64},
                                      ["train.nproc=3", "train.batch_size"]),
}  # fmt: skip


@pytest.mark.parametrize("case", list(INCONSISTENT))
def test_inconsistent_combinations_are_one_line_naming_both_keys(case):
    changes, fragments = INCONSISTENT[case]
    raw = repo_params()
    for dotted, value in changes.items():
        set_key(raw, dotted, value)
    code, err = _check_stage(yaml.safe_dump(raw))
    line = one_error_line(code, err)
    assert line.startswith("error: params.yaml") and all(f in line for f in fragments), err
