"""params.yaml validation: every user mistake is one ConfigError naming the dotted key."""

from __future__ import annotations

import pytest

from sweep.plan import flatten
from tests.conftest import set_key
from tests.params_helpers import parsed, same
from tost import config
from tost.errors import ConfigError


def test_repository_params_parse_to_the_values_written(raw_params):
    p = config.parse(raw_params)
    leaves = flatten(raw_params)
    assert len(leaves) > 80 and p.data.name == "digits"
    for dotted, value in leaves.items():  # every knob reaches the code as written in params.yaml
        assert same(value, parsed(p, dotted), dotted), (dotted, value, parsed(p, dotted))


def test_yaml_exponent_strings_are_numbers(raw_params):
    raw_params["train"]["weight_decay"] = "5e-4"  # PyYAML reads 5e-4 as a string
    assert config.parse(raw_params).train.weight_decay == pytest.approx(5e-4)


def test_paper_aliases_resolve_to_canonical_names(raw_params):
    raw_params["prune"]["method"] = "rp"
    assert config.parse(raw_params).prune.method == "random"


BAD = [
    ("prune.sparsity", 1.5, "prune.sparsity"),
    ("prune.sparsity", -0.1, "prune.sparsity"),
    ("prune.sparsity", 1.0, "prune.sparsity"),
    ("prune.sparsity", "lots", "prune.sparsity"),
    ("prune.method", "nope", "prune.method"),
    ("prune.scope", "everywhere", "prune.scope"),
    ("prune.rounds", 0, "prune.rounds"),
    ("prune.rounds", 1.5, "prune.rounds"),
    ("data.name", "imagenet", "data.name"),
    ("data.val_fraction", 1.0, "data.val_fraction"),
    ("model.arch", "resnet9000", "model.arch"),
    ("model.width", 0, "model.width"),
    ("train.epochs", 0, "train.epochs"),
    ("train.lr", -1, "train.lr"),
    ("train.device", "tpu", "train.device"),
    ("train.amp", "yes", "train.amp"),
    ("train.milestones", [20, 10], "train.milestones"),
    ("train.schedule", "linear", "train.schedule"),
    ("tricks.run", ["baseline", "magic"], "tricks.run"),
    ("tricks.run", [], "tricks.run"),
    ("analysis.bins", 1, "analysis"),
    ("seed", "zero", "seed"),
]


@pytest.mark.parametrize(("key", "value", "named"), BAD, ids=[f"{k}={v}" for k, v, _ in BAD])
def test_bad_value_names_the_key(raw_params, key, value, named):
    set_key(raw_params, key, value)
    with pytest.raises(ConfigError) as err:
        config.parse(raw_params)
    msg = str(err.value)
    assert named in msg
    assert "\n" not in msg


@pytest.mark.parametrize("section", ["data", "model", "prune", "train", "analysis"])
def test_unknown_key_is_refused(raw_params, section):
    raw_params[section]["typo_key"] = 1
    with pytest.raises(ConfigError, match=rf"{section}: unknown key\(s\) \['typo_key'\]"):
        config.parse(raw_params)


@pytest.mark.parametrize(("section", "typo", "meant"), [
    ("prune", "methd", "method"), ("train", "thread", "threads"), ("tricks", "ghost_skp", "ghost_skip"),
    (None, "trian", "train"),
])  # fmt: skip
def test_a_typo_of_a_key_says_which_key_was_meant(raw_params, section, typo, meant):
    (raw_params if section is None else raw_params[section])[typo] = {} if section in (None, "tricks") else 1
    with pytest.raises(ConfigError, match=rf"unknown key\(s\) \['{typo}'\] \(did you mean '{meant}'\?\)"):
        config.parse(raw_params)


def test_a_key_like_none_gets_no_guess(raw_params):
    raw_params["train"]["zzz"] = 1
    with pytest.raises(ConfigError) as err:
        config.parse(raw_params)
    assert "did you mean" not in str(err.value)


def test_unknown_top_level_section(raw_params):
    raw_params["trian"] = {}
    with pytest.raises(ConfigError, match="trian"):
        config.parse(raw_params)


@pytest.mark.parametrize("section", ["data", "model", "train"])
def test_missing_key_is_refused(raw_params, section):
    key = next(iter(raw_params[section]))
    del raw_params[section][key]
    with pytest.raises(ConfigError, match=rf"{section}: missing key\(s\) \['{key}'\]"):
        config.parse(raw_params)


def test_file_method_needs_a_path(raw_params):
    raw_params["prune"].update(method="file", path="")
    with pytest.raises(ConfigError, match="prune.path"):
        config.parse(raw_params)


def test_load_reports_missing_and_broken_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        config.load(tmp_path / "params.yaml")
    bad = tmp_path / "params.yaml"
    bad.write_text("seed: [1,\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        config.load(bad)


def test_every_params_key_is_documented_in_the_params_reference(raw_params):
    readme = (config.Path(__file__).resolve().parents[1] / "docs" / "params.md").read_text()

    def keys(node, prefix=""):
        for k, v in node.items():
            dotted = f"{prefix}{k}"
            if isinstance(v, dict):
                yield from keys(v, dotted + ".")
            else:
                yield dotted

    missing = [k for k in keys(raw_params) if f"`{k}`" not in readme]
    assert not missing, f"docs/params.md does not document: {missing}"
