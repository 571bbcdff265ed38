"""`make plots`: a page that renders with no network (vega inline, no CDN script), one colour per variant."""

from __future__ import annotations

import json

import pytest

from sweep import offline_plots
from tests.conftest import ROOT
from tost.errors import TostError


def test_the_template_inlines_each_library_and_asks_dvc_for_no_cdn_script():
    page = offline_plots.template({"vega": "/*V*/", "vega-lite": "/*L*/", "vega-embed": "/*E*/"})
    assert "{plot_divs}" in page and "{scripts}" not in page  # DVC adds its CDN tags at {scripts}
    assert all(code in page for code in ("/*V*/", "/*L*/", "/*E*/")) and "src=" not in page
    assert page.index("/*V*/") < page.index("/*L*/") < page.index("/*E*/")  # vega-embed needs both


def test_cached_libraries_are_read_without_npm(tmp_path, monkeypatch):
    for name, (version, _) in offline_plots.LIBRARIES.items():
        (tmp_path / f"{name}-{version}.min.js").write_text(f"/*{name}*/")
    monkeypatch.setenv("PATH", "")  # no npm: it must not be needed
    assert offline_plots.fetch(tmp_path) == {n: f"/*{n}*/" for n in offline_plots.LIBRARIES}


def test_without_npm_the_first_fetch_is_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", "")
    with pytest.raises(TostError, match="make plots needs npm"):
        offline_plots.fetch(tmp_path)


def test_the_versions_are_those_dvcs_own_page_loads():
    from dvc_render.vega import VegaRenderer

    for name, (version, _) in offline_plots.LIBRARIES.items():
        assert f"npm/{name}@{version}" in VegaRenderer.SCRIPTS


def test_the_line_plots_colour_each_variant_and_fit_the_axis():
    spec = json.loads((ROOT / ".dvc" / "plots" / "variants.json").read_text())
    enc = spec["encoding"]
    assert enc["color"]["field"] == "field" and enc["strokeDash"]["field"] == "rev"  # variant, revision
    assert enc["y"]["scale"]["zero"] is False
