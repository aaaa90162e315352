"""The documentation site builds offline with warnings as errors (Sphinx + myst-nb, ``docs/``).

The same command as the README's: ``python -m sphinx -W --keep-going -b html docs docs/_build/html``
(here into a temporary folder). Then the pages are checked: every tutorial is a page with its stored
figures as images, the API reference and the CLI reference are there, and no page loads a script
from the network when Debian's MathJax is installed (.ci/run installs it).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("sphinx")
pytest.importorskip("myst_nb")
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
MATHJAX = Path("/usr/share/javascript/mathjax/MathJax.js")


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    out = tmp_path_factory.mktemp("docs")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "sphinx",
            "-W",
            "--keep-going",
            "-q",
            "-b",
            "html",
            "-d",
            str(out / "doctrees"),
            "docs",
            str(out / "html"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, f"sphinx failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    return out / "html"


def test_every_tutorial_is_a_page_with_its_figures(site):
    for nb in sorted((ROOT / "tutorials").glob("*.ipynb")):
        page = (site / "tutorials" / nb.name.replace(".ipynb", ".html")).read_text()
        if '"image/png"' in nb.read_text():
            assert "<img" in page, f"{nb.name}: its stored figures did not reach the page"
    for name in ("a1_ood_floor", "a4_pcgrad_vs_coremtl", "guide"):
        page = (site / "tutorials" / "assignments" / f"{name}.html").read_text()
        assert "BEGIN SOLUTION" not in page and "BEGIN HIDDEN TESTS" not in page  # student versions only


def test_reference_pages(site):
    api = (site / "api.html").read_text()
    for name in (
        "coremtl_lite.losses.cka.linear_cka",
        "coremtl_lite.theory.ood_gap",
        "coremtl_lite.train.trainer.Trainer",
    ):
        assert f'id="{name}"' in api, name
    cli = (site / "cli.html").read_text()
    for command in ("train", "evaluate", "demo", "bench", "assignments", "tutorials"):
        assert f"coremtl-lite {command}" in cli
    method = (site / "method.html").read_text()
    for anchor in ("Eq. 11", "Eq. 12", "Eq. 13", "Eq. 16", "Theorem 2.3", "Theorem 2.4", "Proposition 2.5"):
        assert anchor in method


@pytest.mark.skipif(not MATHJAX.is_file(), reason="Debian's libjs-mathjax is not installed")
def test_pages_load_nothing_from_the_network(site):
    for page in site.rglob("*.html"):
        remote = re.findall(r"<(?:script|link)[^>]+(?:src|href)=[\"'](https?:[^\"']+)", page.read_text())
        assert not remote, f"{page.relative_to(site)} loads {remote[:3]}"
