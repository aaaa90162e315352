"""Every "Eq. N" the repository cites is either a labelled equation of docs/method.md or names its paper.

The rules (docs/method.md, "How the code cites equations"):

* a bare ``Eq. N`` (or ``paper Eq. N`` / ``CORE-MTL Eq. N``) is the CORE-MTL paper's equation N and
  must have the label ``(eq-N)=`` in docs/method.md; a range ``Eq. 13-14`` needs every number in it;
* another paper's equation is written ``<short name> Eq. N`` with a short name from the table of
  docs/method.md ("Other papers' equations");
* a bare ``Eq. N`` after the name of another paper on the same line (a short name of that table, or
  an author-year citation "et al. 2018"), or in a file that cites other papers' equations by short
  name, must say which paper it is: it is flagged, because there it is most likely not CORE-MTL's.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
METHOD = ROOT / "docs" / "method.md"

#: files whose equation labels are fixed by a change in flight; remove an entry once it has landed
PENDING = {}

CITATION = re.compile(r"\bEqs?\.\s?\(?(\d+)\)?((?:\s?[-–]\s?\d+)?)")
AUTHOR_YEAR = re.compile(r"et al\.,? (19|20)\d\d")


def _labels(text: str) -> set[int]:
    return {int(n) for n in re.findall(r"^\(eq-(\d+)\)=$", text, re.M)}


def _short_names(text: str) -> list[str]:
    section = text.split("(other-papers)=", 1)[1]
    names = re.findall(r"^\| ([^|]+?) \| [^|]+ \|$", section, re.M)
    return sorted((n for n in names if n not in ("short name", "---")), key=len, reverse=True)


def _sources() -> list[tuple[str, list[str]]]:
    """``(path, lines)`` of every file that may cite equations: code, tests, docs and notebook sources."""
    out = []
    patterns = [
        "coremtl_lite/**/*.py",
        "tests/**/*.py",
        "benchmarks/*.py",
        "scripts/*.py",
        "data_scripts/*.py",
        "docs/*.md",
        "README.md",
        "CONTRIBUTING.md",
    ]
    for pattern in patterns:
        for path in sorted(ROOT.glob(pattern)):
            if path.name == Path(__file__).name:
                continue
            out.append((str(path.relative_to(ROOT)), path.read_text(encoding="utf-8").splitlines()))
    for path in sorted(ROOT.glob("tutorials/**/*.ipynb")):
        cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
        lines = [line for cell in cells for line in "".join(cell["source"]).splitlines()]
        out.append((str(path.relative_to(ROOT)), lines))
    return out


def _numbers(match: re.Match) -> list[int]:
    first = int(match.group(1))
    last = re.sub(r"\D", "", match.group(2) or "")
    return list(range(first, int(last) + 1)) if last else [first]


def check(sources: list[tuple[str, list[str]]], labels: set[int], names: list[str]) -> list[str]:
    """Every broken rule, as ``path:line: message``."""
    prefix = re.compile(r"(?:" + "|".join(re.escape(n) for n in names) + r")\s*$")
    errors = []
    for path, lines in sources:
        if path in PENDING:
            continue
        cites_others = any(
            re.search(r"(?:" + "|".join(re.escape(n) for n in names) + r") Eqs?\.\s?\d", line)
            for line in lines
        )
        for i, line in enumerate(lines, 1):
            for m in CITATION.finditer(line):
                before = line[: m.start()]
                if prefix.search(before):
                    continue  # another paper's equation, named
                cited = m.group(0).strip()
                explicit = re.search(r"(?:paper|CORE-MTL)\s*$", before)
                if not explicit:
                    others = [n for n in names if re.search(rf"(?<![\w-]){re.escape(n)}(?![\w-])", before)]
                    if others or AUTHOR_YEAR.search(before):
                        errors.append(
                            f"{path}:{i}: {cited!r} beside {others or 'an author-year citation'}: "
                            "write '<short name> Eq. N' for another paper, 'paper Eq. N' for CORE-MTL"
                        )
                        continue
                    if cites_others and path not in (
                        "docs/method.md",
                        "CONTRIBUTING.md",
                    ):  # they state the rules
                        errors.append(
                            f"{path}:{i}: bare {cited!r} in a file that cites other papers' equations: "
                            "say which paper ('<short name> Eq. N' or 'paper Eq. N')"
                        )
                        continue
                missing = [n for n in _numbers(m) if n not in labels]
                if missing:
                    errors.append(
                        f"{path}:{i}: {cited!r} cites CORE-MTL Eq. {missing}, which docs/method.md "
                        "does not label (eq-N)"
                    )
    return errors


def test_method_page_labels_every_equation_of_the_paper():
    text = METHOD.read_text(encoding="utf-8")
    assert _labels(text) == set(range(1, 41))
    assert "MT-CRL" in _short_names(text)


def test_every_cited_equation_is_labelled_or_names_its_paper():
    text = METHOD.read_text(encoding="utf-8")
    errors = check(_sources(), _labels(text), _short_names(text))
    assert not errors, "equation citations to fix:\n" + "\n".join(errors)


def test_the_check_finds_each_kind_of_mistake():
    names = ["MT-CRL", "DWA"]
    sources = [
        ("a.py", ["L_rec (Eq. 14)", "S(N, L), Eq. 41", "(Liu et al. 2019, Eq. 7)"]),
        (
            "b.py",
            ["graph loss, MT-CRL Eq. 3", "# Eq. 2", "the objective, paper Eq. 16", "weights (DWA Eq. 7)"],
        ),
        ("c.py", ["Eq. 13-15"]),
    ]
    errors = check(sources, labels={13, 14, 16}, names=names)
    assert [":".join(e.split(":")[:2]) for e in errors] == ["a.py:2", "a.py:3", "b.py:2", "c.py:1"]
    assert (
        "does not label" in errors[0] and "author-year" in errors[1] and "in a file that cites" in errors[2]
    )
    assert errors[3].endswith(
        "'Eq. 13-15' cites CORE-MTL Eq. [15], which docs/method.md does not label (eq-N)"
    )
