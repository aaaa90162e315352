"""The one table formatter: a header and rows of cells as markdown or as aligned plain text.

The CLI, the benchmark report and the diagnostics' tables choose their columns and format their
numbers; the layout is this module's. Cells are turned into text with ``str`` (format numbers before).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["format_table"]

STYLES = ("plain", "markdown")


def format_table(
    header: Sequence[Any], rows: Sequence[Sequence[Any]], style: str = "plain", left: int = 1
) -> str:
    """A table of ``rows`` under ``header``.

    * ``"markdown"``: a GitHub-flavoured markdown table;
    * ``"plain"``: columns separated by two spaces, the first ``left`` columns left-aligned and the
      others right-aligned (numbers), a rule of dashes under the header; every line has the same width.
    """
    if style not in STYLES:
        raise ValueError(f"format_table: style must be one of {', '.join(STYLES)}, got {style!r}")
    header = [str(h) for h in header]
    body = [[str(c) for c in row] for row in rows]
    for i, row in enumerate(body):
        if len(row) != len(header):
            raise ValueError(f"format_table: row {i} has {len(row)} cells, the header {len(header)}")
    if style == "markdown":
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in body])
    width = [max(len(h), *(len(r[k]) for r in body)) if body else len(h) for k, h in enumerate(header)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) if k < left else c.rjust(w) for k, (c, w) in enumerate(zip(cells, width)))

    top = line(header)
    return "\n".join([top, "-" * len(top), *map(line, body)])
