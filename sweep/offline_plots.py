"""`make plots`: DVC's plots as one HTML page that renders with no network.

`dvc plots show` writes a page whose scripts (vega, vega-lite, vega-embed) come from a CDN, so on an
offline machine or cluster node its line plots are blank. This fetches those three libraries once,
pinned to the versions DVC's own page asks for, from the npm registry (`npm pack`, which checks each
package against the registry's integrity hash) into `.cache/vega/`, and hands DVC a template with
them inline (`dvc plots show --html-template`): the page needs nothing at view time.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Mapping
from pathlib import Path

from stages._common import run_stage
from tost.errors import TostError

# The versions dvc_render.vega.VegaRenderer.SCRIPTS loads from the CDN, and the built file of each.
LIBRARIES = {
    "vega": ("5.20.2", "package/build/vega.min.js"),
    "vega-lite": ("5.2.0", "package/build/vega-lite.min.js"),
    "vega-embed": ("6.18.2", "package/build/vega-embed.min.js"),
}
CACHE = Path(".cache/vega")


def template(scripts: Mapping[str, str]) -> str:
    """A page for `--html-template`: each library inline, then DVC's plots (`{plot_divs}`).

    It has no `{scripts}` placeholder, so DVC adds none of its CDN `<script src>` tags.
    """
    inline = "\n".join(f"<script>/* {name} */\n{code}\n</script>" for name, code in scripts.items())
    return (
        '<!DOCTYPE html>\n<html>\n<head>\n<meta charset="utf-8">\n<title>tost: DVC plots</title>\n'
        f"{inline}\n<style>body {{ font-family: sans-serif; }} table {{ border-spacing: 15px; }}</style>\n"
        "</head>\n<body>\n{plot_divs}\n</body>\n</html>\n"
    )


def fetch(cache: Path = CACHE) -> dict[str, str]:
    """Each library's code, from `cache` or, the first time, from the npm registry."""
    out = {}
    for name, (version, member) in LIBRARIES.items():
        path = cache / f"{name}-{version}.min.js"
        if not path.exists():
            cache.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory() as tmp:
                cmd = ["npm", "pack", f"{name}@{version}", "--silent", "--pack-destination", tmp]
                try:
                    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=300)
                except FileNotFoundError:
                    raise TostError(
                        "make plots needs npm (Node.js) once, to fetch vega; install it"
                    ) from None
                if proc.returncode != 0:
                    raise TostError(
                        f"npm pack {name}@{version} failed: {(proc.stderr or proc.stdout).strip()[-300:]}"
                    )
                with tarfile.open(Path(tmp) / f"{name}-{version}.tgz") as tar:
                    code = tar.extractfile(member).read().decode("utf-8")  # type: ignore[union-attr]
            path.write_text(code, encoding="utf-8")
        out[name] = path.read_text(encoding="utf-8")
    return out


def main(argv: list[str] | None = None) -> None:
    """Write the offline template, then let DVC render the plots (or a diff of revisions) with it."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="dvc_plots", help="the folder DVC writes index.html to")
    ap.add_argument("revs", nargs="*", help="revisions or experiments: `dvc plots diff` of them")
    args = ap.parse_args(argv)
    page = CACHE / "template.html"
    page.parent.mkdir(parents=True, exist_ok=True)
    page.write_text(template(fetch()), encoding="utf-8")
    verb = ["diff", *args.revs] if args.revs else ["show"]
    cmd = [sys.executable, "-m", "dvc", "plots", *verb, "--html-template", str(page), "-o", args.out]
    if subprocess.run(cmd, check=False).returncode != 0:
        raise TostError(f"dvc plots {verb[0]} failed (its error is above)")


if __name__ == "__main__":
    run_stage(main, threads=False)
