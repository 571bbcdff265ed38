"""The results' budget-study table (docs/results.md) says what the committed tables say, cell for cell.

The numbers are typed in by hand; this catches a table rebuilt (`make budget`) without the page, or
a number copied wrongly.
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from sweep import compare

ROOT = Path(__file__).resolve().parent.parent
SETTINGS = {  # README column -> committed table, as in the Makefile's budget target
    "3k / w8 / 10 ep (fp32)": "metrics/table-fashion-fashion-cpu-schedule-study.csv",
    "12k / w16 / 10 ep": "metrics/table-fashion-budget-budget-10.csv",
    "12k / w16 / 30 ep": "metrics/table-fashion-budget-budget-30.csv",
}
METHODS = ("random", "snip")  # RP / SNIP, the order the README names


def readme_table(heading: str) -> list[list[str]]:
    """The first Markdown table after `heading`, as rows of stripped cells (header row included)."""
    block = []
    for line in (ROOT / "docs" / "results.md").read_text().split(heading, 1)[1].splitlines():
        if line.startswith("|"):
            block.append([c.strip() for c in line.strip("|").split("|")])
        elif block:
            break
    assert block, f"no table after {heading!r}"
    return [r for r in block if not set("".join(r)) <= set("-")]  # without the |---| line


def plain(cell: str) -> str:
    """A README cell as sweep.compare writes it: ASCII minus, no bold."""
    return cell.replace("−", "-").replace("**", "")


def expected(df: pd.DataFrame, variant: str) -> str:
    """One README cell: RP / SNIP, the gain ± its spread (or the baseline accuracy), or a dash."""
    rows = df[df.variant == variant].set_index("method")
    if rows.empty:
        return "—"
    if variant == "baseline":
        return " / ".join(f"{rows.loc[m, 'mean']:.2f}" for m in METHODS)
    return " / ".join(compare.format_gain(rows.loc[m]) for m in METHODS)


def test_the_readme_budget_table_is_the_committed_tables():
    header, *body = readme_table("## Budget study")
    assert header[1:] == list(SETTINGS)
    tables = {name: pd.read_csv(ROOT / path) for name, path in SETTINGS.items()}
    variants = [re.sub(r"`| accuracy", "", r[0]) for r in body]
    assert set(variants) >= {"baseline", "ghost_skip", "label_smooth", "tost"}
    for variant, row in zip(variants, body, strict=True):
        for name, cell in zip(SETTINGS, row[1:], strict=True):
            assert plain(cell) == expected(tables[name], variant), (variant, name)


def readme_code(heading: str) -> str:
    """The first ```python block after `heading` in the README."""
    text = (ROOT / "README.md").read_text().split(heading, 1)[1]
    return text.split("```python\n", 1)[1].split("```", 1)[0]


def test_the_python_example_runs(tmp_path, monkeypatch, capsys):
    """The README's "Use it from Python" block, as written, on tiny params (it cannot rot)."""
    import torch
    import yaml

    from tests.conftest import repo_params

    raw = repo_params()
    raw["model"]["width"] = 4
    raw["train"].update(epochs=1, batch_size=128)
    raw["tricks"]["lrsi"]["iters"] = 2
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    monkeypatch.chdir(tmp_path)
    threads = torch.get_num_threads()
    try:
        exec(compile(readme_code("## Use it from Python"), "README.md", "exec"), {})
    finally:
        torch.set_num_threads(threads)
    acc, sparsity = map(float, capsys.readouterr().out.split()[-2:])
    assert 0 <= acc <= 100 and abs(sparsity - 0.9) < 1e-3


def test_the_mask_export_loads_into_torch_prune_and_keeps_every_weight(tmp_path, monkeypatch):
    """The README's "Take a mask elsewhere" block, with no tost import, on the mask tost saved."""
    import torch

    from tests.conftest import random_mask, tiny_net

    model = tiny_net()
    before = {n: w.detach().clone() for n, w in model.named_parameters()}
    mask = random_mask(model)
    (tmp_path / "artifacts").mkdir()
    mask.save(tmp_path / "artifacts" / "mask.pt", {"method": "random"})
    monkeypatch.chdir(tmp_path)
    exec(compile(readme_code("## Take a mask elsewhere"), "README.md", "exec"), {"model": model})
    for name, keep in mask.tensors.items():
        module = model.get_submodule(name.removesuffix(".weight"))
        assert torch.equal(module.weight_orig, before[name])  # nothing moved
        assert torch.equal(module.weight, torch.where(keep, before[name], torch.zeros(())))
