"""Sphinx configuration of the coremtl_lite documentation site.

Build it (offline, warnings as errors) with::

    python -m sphinx -W --keep-going -b html docs docs/_build/html

Tutorial pages are the notebooks of ``tutorials/`` with their stored outputs (never executed here):
this file copies them into ``docs/tutorials/`` before the build, and writes the command-line
reference ``docs/cli.md`` from the argument parser, so both are always today's. Both are generated
(git-ignored).
"""

from __future__ import annotations

import io
import re
import shutil
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path.insert(0, str(ROOT))

import coremtl_lite  # noqa: E402

project = "coremtl_lite"
author = "coremtl_lite contributors"
copyright = "2026, coremtl_lite contributors"
release = coremtl_lite.__version__

extensions = [
    "myst_nb",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.viewcode",
    "sphinx.ext.mathjax",
]
exclude_patterns = ["_build", "**.ipynb_checkpoints"]
html_theme = "furo"

# ---- math: MathJax from Debian's libjs-mathjax when it is installed (.ci/run installs it), so that the
# pages render their equations offline on this machine; elsewhere Sphinx's default (a CDN)
_MATHJAX = Path("/usr/share/javascript/mathjax/MathJax.js")
if _MATHJAX.is_file():
    mathjax_path = _MATHJAX.as_uri() + "?config=TeX-AMS-MML_HTMLorMML"
    mathjax2_config = {
        "tex2jax": {
            "inlineMath": [["\\(", "\\)"]],
            "displayMath": [["\\[", "\\]"]],
            "processEscapes": True,
            "processClass": "tex2jax_process|mathjax_process|math|output_area",
        }
    }
html_title = f"coremtl_lite {release}"

# ---- notebooks: stored outputs only; the plotly figures show as their stored PNG fallbacks (plotly's
# JSON needs plotly.js, which a static page would have to fetch), widgets as their text fallback
nb_execution_mode = "off"
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence"]
myst_heading_anchors = 3
nb_ipywidgets_js = {}  # no widget manager from a CDN: the page stays offline
nb_mime_priority_overrides = [
    ("html", "application/vnd.jupyter.widget-view+json", None),
    ("html", "application/vnd.plotly.v1+json", None),
    ("html", "image/png", 5),
]
suppress_warnings = ["mystnb.unknown_mime_type"]

# ---- API reference from the docstrings
autodoc_default_options = {"members": True, "undoc-members": False, "show-inheritance": True}
autodoc_member_order = "bysource"
autodoc_typehints = "description"
napoleon_google_docstring = True
napoleon_numpy_docstring = False


def _copy_tutorials() -> None:
    dest = DOCS / "tutorials"
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir()
    for nb in sorted((ROOT / "tutorials").glob("*.ipynb")):
        shutil.copy(nb, dest / nb.name)
    (dest / "assignments").mkdir()
    # the student versions: the solutions (with their hidden tests) stay off the public site
    for nb in sorted((ROOT / "tutorials" / "assignments" / "student").glob("*.ipynb")):
        shutil.copy(nb, dest / "assignments" / nb.name)
    shutil.copy(ROOT / "tutorials" / "assignments" / "README.md", dest / "assignments" / "guide.md")


def _write_cli_reference() -> None:
    import argparse

    from coremtl_lite.cli import _parser

    parser = _parser()
    lines = [
        "# Command line reference",
        "",
        "Generated from `coremtl-lite --help` and the help of each command.",
        "",
        "```text",
        parser.format_help().rstrip(),
        "```",
        "",
    ]
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, command in sub.choices.items():
        lines += [f"## `coremtl-lite {name}`", "", "```text", command.format_help().rstrip(), "```", ""]
    (DOCS / "cli.md").write_text("\n".join(lines), encoding="utf-8")


_copy_tutorials()
_write_cli_reference()


# ---- docstrings written as plain text
# Many docstrings write formulas as plain text (``|x - y|``, ``w*^2``, indented continuation lines),
# which reStructuredText would read as substitutions, emphasis or definition lists. After napoleon has
# turned the Google-style sections into reST, each docstring is parsed once on its own; one that does
# not parse cleanly is shown exactly as written, as a literal block, instead of as broken markup.
_ROLE = re.compile(r":(?:[\w-]+:)?[\w-]+:`([^`]*)`")


def _parses_cleanly(text: str) -> bool:
    from docutils.core import publish_doctree
    from docutils.utils import Reporter

    stream = io.StringIO()
    publish_doctree(
        _ROLE.sub(r"``\1``", text),
        settings_overrides={
            "report_level": Reporter.WARNING_LEVEL,
            "halt_level": Reporter.SEVERE_LEVEL + 1,
            "warning_stream": stream,
            "file_insertion_enabled": False,
            "raw_enabled": False,
        },
    )
    return not stream.getvalue()


def _literal_if_broken(app, what, name, obj, options, lines):
    if lines and not _parses_cleanly("\n".join(lines)):
        lines[:] = ["::", ""] + ["    " + line for line in lines] + [""]


def setup(app):
    app.connect("autodoc-process-docstring", _literal_if_broken, priority=900)  # after napoleon (500)
