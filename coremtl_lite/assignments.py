"""Course assignments: teaching feedback for graded cells and the student-version generator.

The assignments live in ``tutorials/assignments/`` as *solution* notebooks written once, in nbgrader's
format, so that an instructor can run nbgrader on them directly:

* solution regions ``### BEGIN SOLUTION`` / ``### END SOLUTION`` in cells whose metadata has
  ``"nbgrader": {"solution": true, ...}``;
* hidden tests ``### BEGIN HIDDEN TESTS`` / ``### END HIDDEN TESTS`` in autograded test cells
  (``"grade": true, "solution": false``);
* nbgrader cell metadata (``grade``, ``grade_id``, ``locked``, ``points``, ``schema_version: 3``,
  ``solution``, ``task``).

``python -m coremtl_lite.assignments generate`` (or ``coremtl-lite assignments``) writes the student
versions into ``tutorials/assignments/student/`` with nbgrader's preprocessors, as nbgrader's
``generate_assignment`` does, without an nbgrader course folder or database: each solution region
becomes ``# YOUR CODE HERE`` + ``raise NotImplementedError()`` (code) or ``YOUR ANSWER HERE``
(markdown), hidden-test regions are removed, outputs are cleared.

Graded cells talk to students through :func:`check`, :func:`check_close`, :func:`attempt` and
:func:`need`: a failing check raises :class:`Feedback` (an ``AssertionError``, so nbgrader counts the
cell as failed) whose message says what to look at, never a bare ``assert``.
"""

from __future__ import annotations

import argparse
import copy
import difflib
import inspect
import re
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = [
    "ASSIGNMENTS",
    "CODE_STUB",
    "TEXT_STUB",
    "Feedback",
    "attempt",
    "check",
    "check_close",
    "default_dirs",
    "generate",
    "main",
    "make_student_notebook",
    "need",
    "nbgrader_cells",
    "outdated",
    "tutorials_dir",
    "validate_nbgrader_metadata",
]

#: The solution notebooks, in teaching order.
ASSIGNMENTS = (
    "a1_ood_floor.ipynb",
    "a2_cka_independence.ipynb",
    "a3_counterfactual_cfa.ipynb",
    "a4_pcgrad_vs_coremtl.ipynb",
)

BEGIN_SOLUTION, END_SOLUTION = "### BEGIN SOLUTION", "### END SOLUTION"
BEGIN_HIDDEN, END_HIDDEN = "### BEGIN HIDDEN TESTS", "### END HIDDEN TESTS"
#: the stubs handed to nbgrader's ``ClearSolutions`` (its defaults, written out)
CODE_STUB = "# YOUR CODE HERE\nraise NotImplementedError()"
TEXT_STUB = "YOUR ANSWER HERE"
_NBGRADER_KEYS = ("grade", "grade_id", "locked", "schema_version", "solution", "task")


# ------------------------------------------------------------------------------------ feedback
class Feedback(AssertionError):
    """A graded check failed; the message is written for the student (what to check, not a trace)."""


def check(name: str, condition: Any, hint: str) -> None:
    """Pass (print ``✓ name``) when ``condition`` is truthy, else raise :class:`Feedback` with ``hint``.

    Args:
        name: what is being checked, in the student's words ("w* at theta = 0 is 1").
        condition: the outcome of the check (anything with a truth value; NumPy/torch scalars work).
        hint: what to look at when it fails ("with no entanglement z = s, so the best head is 1").
    """
    try:
        passed = bool(condition)
    except (TypeError, ValueError) as err:  # e.g. an array where one True/False was expected
        raise Feedback(
            f"✗ {name}\n  The check could not be evaluated ({err}); did your function return an "
            f"array or None where a single number was expected?\n  Hint: {hint}"
        ) from None
    if passed:
        print(f"✓ {name}")
        return
    raise Feedback(f"✗ {name}\n  Hint: {hint}")


def check_close(
    name: str, actual: Any, expected: Any, hint: str, rtol: float = 1e-6, atol: float = 1e-9
) -> None:
    """:func:`check` that ``actual`` ≈ ``expected`` elementwise (``np.allclose``), showing both values.

    A shape mismatch or non-finite value is reported as such (not as a NumPy broadcasting error).
    """
    if actual is None:
        raise Feedback(
            f"✗ {name}\n  Expected a number or an array of numbers, got None: did your function "
            f"forget to `return` its result?\n  Hint: {hint}"
        )
    try:
        got = np.asarray(_to_numpy(actual), dtype=float)
    except (TypeError, ValueError):
        raise Feedback(
            f"✗ {name}\n  Expected a number or an array of numbers, got {type(actual).__name__}: "
            f"{actual!r}\n  Hint: {hint}"
        ) from None
    want = np.asarray(_to_numpy(expected), dtype=float)
    if got.shape != want.shape:
        raise Feedback(f"✗ {name}\n  Expected shape {want.shape}, got shape {got.shape}\n  Hint: {hint}")
    if not np.all(np.isfinite(got)):
        raise Feedback(f"✗ {name}\n  Your result contains NaN or inf: {_short(got)}\n  Hint: {hint}")
    if np.allclose(got, want, rtol=rtol, atol=atol):
        print(f"✓ {name}")
        return
    raise Feedback(f"✗ {name}\n  Expected ≈ {_short(want)}\n  Got        {_short(got)}\n  Hint: {hint}")


def attempt(fn: Callable, *args, **kwargs):
    """Call a student's function; turn ``NotImplementedError`` into a clear "not implemented yet".

    Any other exception propagates unchanged (it is the student's bug, with its real traceback).
    """
    try:
        return fn(*args, **kwargs)
    except NotImplementedError:
        name = getattr(fn, "__name__", repr(fn))
        raise Feedback(
            f"✗ `{name}` is not implemented yet.\n  Hint: fill in the cell that defines `{name}` "
            "(replace `raise NotImplementedError()` below '# YOUR CODE HERE' with your code), "
            "run that cell, then run this one again."
        ) from None


def need(*names: str) -> None:
    """Raise :class:`Feedback` unless every variable in ``names`` exists in the notebook (caller's globals).

    Graded cells call it for results computed by an earlier cell, so a skipped or failed cell gives
    "run the cell that computes X first" instead of a ``NameError``.
    """
    frame = inspect.currentframe()
    caller = frame.f_back.f_globals if frame is not None and frame.f_back is not None else {}
    missing = [n for n in names if n not in caller]
    if missing:
        listed = ", ".join(f"`{n}`" for n in missing)
        raise Feedback(
            f"✗ {listed} not computed yet.\n  Hint: run the cell above that computes {listed}; "
            "if it failed, fix the function it reports first."
        )


def _to_numpy(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    return value


def _short(arr: np.ndarray) -> str:
    arr = np.asarray(arr)
    if arr.ndim == 0:
        return f"{float(arr):.6g}"
    return np.array2string(arr, formatter={"float_kind": lambda v: f"{v:.6g}"}, threshold=8, edgeitems=3)


# ----------------------------------------------------------------------------- nbgrader format
def nbgrader_cells(nb) -> list[tuple[int, dict]]:
    """``(index, nbgrader metadata)`` for every cell of ``nb`` that carries nbgrader metadata."""
    return [(i, c.metadata["nbgrader"]) for i, c in enumerate(nb.cells) if "nbgrader" in c.metadata]


def validate_nbgrader_metadata(nb, name: str = "notebook") -> list[str]:
    """Problems that would stop nbgrader from using ``nb`` (empty list: none).

    Checks what nbgrader's ``generate_assignment`` / ``autograde`` rely on: every nbgrader cell has
    all keys with ``schema_version`` 3 and a unique ``grade_id``; graded cells have ``points`` > 0;
    autograded test cells (grade, not solution) are code cells and locked; solution cells are unlocked;
    solution delimiters appear only in solution cells and hidden-test delimiters only in test cells,
    balanced and not nested.
    """
    problems = []
    seen: set[str] = set()
    for i, cell in enumerate(nb.cells):
        src = cell.source
        meta = cell.metadata.get("nbgrader")
        where = f"{name} cell {i}"
        if meta is None:
            if BEGIN_SOLUTION in src or BEGIN_HIDDEN in src:
                problems.append(f"{where}: has nbgrader delimiters but no nbgrader metadata")
            continue
        missing = [k for k in _NBGRADER_KEYS if k not in meta]
        if missing:
            problems.append(f"{where}: nbgrader metadata lacks {missing}")
            continue
        if meta["schema_version"] != 3:
            problems.append(f"{where}: schema_version must be 3, got {meta['schema_version']}")
        gid = meta["grade_id"]
        if not isinstance(gid, str) or not re.fullmatch(r"[A-Za-z0-9_\-]+", gid):
            problems.append(f"{where}: grade_id {gid!r} must be letters, digits, '_' or '-'")
        if gid in seen:
            problems.append(f"{where}: duplicate grade_id {gid!r}")
        seen.add(gid)
        if meta["grade"] and not (isinstance(meta.get("points"), (int, float)) and meta["points"] > 0):
            problems.append(f"{where} ({gid}): graded cells need points > 0, got {meta.get('points')!r}")
        is_test = meta["grade"] and not meta["solution"]
        if is_test and (cell.cell_type != "code" or not meta["locked"]):
            problems.append(f"{where} ({gid}): autograded test cells must be locked code cells")
        if meta["solution"] and meta["locked"]:
            problems.append(f"{where} ({gid}): solution cells must not be locked")
        if (BEGIN_SOLUTION in src) and not meta["solution"]:
            problems.append(f"{where} ({gid}): solution delimiters in a cell not marked solution")
        if (BEGIN_HIDDEN in src) and not is_test:
            problems.append(f"{where} ({gid}): hidden-test delimiters outside an autograded test cell")
        for begin, end in ((BEGIN_SOLUTION, END_SOLUTION), (BEGIN_HIDDEN, END_HIDDEN)):
            try:
                _regions(src, begin, end)
            except ValueError as err:
                problems.append(f"{where} ({gid}): {err}")
    return problems


def _regions(source: str, begin: str, end: str) -> list[tuple[int, int]]:
    """Line-index pairs (begin, end) of the delimited regions; raises ValueError when unbalanced."""
    out, start = [], None
    for k, line in enumerate(source.split("\n")):
        text = line.strip()
        if text == begin:
            if start is not None:
                raise ValueError(f"nested {begin!r} at line {k + 1}")
            start = k
        elif text == end:
            if start is None:
                raise ValueError(f"{end!r} without {begin!r} at line {k + 1}")
            out.append((start, k))
            start = None
    if start is not None:
        raise ValueError(f"{begin!r} at line {start + 1} is never closed by {end!r}")
    return out


def make_student_notebook(nb):
    """The student version of a solution notebook (a new notebook; ``nb`` is not modified).

    The notebook is checked with :func:`validate_nbgrader_metadata` (messages that name the cell), then
    nbgrader's own preprocessors make the student version, as ``nbgrader generate_assignment`` does:
    ``ClearSolutions`` (solution regions, or whole solution cells without delimiters, become
    :data:`CODE_STUB` / :data:`TEXT_STUB`), ``ClearHiddenTests``, ``ClearOutput`` and ``LockCells``
    (graded and read-only cells can be neither deleted nor edited, solution cells cannot be deleted).
    Widget state and execution metadata are dropped. The nbgrader metadata stays, so the student
    version can be collected and autograded.
    """
    problems = validate_nbgrader_metadata(nb)
    if problems:
        raise ValueError("invalid nbgrader notebook:\n  " + "\n  ".join(problems))
    try:
        from nbgrader.preprocessors import ClearHiddenTests, ClearOutput, ClearSolutions, LockCells
    except ImportError:
        raise ImportError(
            "generating the student versions uses nbgrader: pip install nbgrader "
            "(it is in coremtl_lite's dev extras)"
        ) from None
    out = copy.deepcopy(nb)
    resources: dict[str, Any] = {"language": "python"}
    for step in (
        ClearSolutions(code_stub={"python": CODE_STUB}, text_stub=TEXT_STUB),
        ClearHiddenTests(),
        ClearOutput(),
        LockCells(),
    ):
        out, resources = step.preprocess(out, resources)
    out.metadata.pop("widgets", None)
    for cell in out.cells:
        cell.metadata.pop("execution", None)
        meta = cell.metadata.get("nbgrader", {})
        if meta.get("grade") and not meta.get("solution"):  # a test cell ends at its last visible line
            cell.source = cell.source.rstrip("\n")
    return out


# ----------------------------------------------------------------------------------- generate
def tutorials_dir() -> Path:
    """The tutorials folder: the repository's ``tutorials/`` in a source checkout (or an editable
    install), else the copy shipped inside the installed package (``coremtl_lite/tutorials``)."""
    here = Path(__file__).resolve().parent
    for candidate in (here.parent / "tutorials", here / "tutorials"):
        if (candidate / "assignments").is_dir():
            return candidate
    raise FileNotFoundError(f"no tutorials folder next to {here} (neither ../tutorials nor ./tutorials)")


def default_dirs() -> tuple[Path, Path]:
    """``(tutorials/assignments, tutorials/assignments/student)``, see :func:`tutorials_dir`."""
    source = tutorials_dir() / "assignments"
    return source, source / "student"


def _student_text(path: Path) -> str:
    import nbformat

    try:
        nb = nbformat.read(path, as_version=4)
    except FileNotFoundError:
        raise FileNotFoundError(f"solution notebook not found: {path}") from None
    try:
        student = make_student_notebook(nb)
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from None
    return nbformat.writes(student) + "\n"


def generate(
    source_dir: str | Path | None = None,
    dest_dir: str | Path | None = None,
    names: Iterable[str] = ASSIGNMENTS,
) -> list[Path]:
    """Write the student version of each solution notebook ``names`` from ``source_dir`` into ``dest_dir``.

    Defaults: the repository's ``tutorials/assignments`` and its ``student/`` folder. Returns the
    written paths. Output is byte-for-byte deterministic, so CI can diff it against the committed files.
    """
    src_default, dest_default = default_dirs()
    source_dir = Path(source_dir) if source_dir is not None else src_default
    dest_dir = Path(dest_dir) if dest_dir is not None else dest_default
    dest_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name in names:
        target = dest_dir / name
        target.write_text(_student_text(source_dir / name), encoding="utf-8")
        written.append(target)
    return written


def outdated(
    source_dir: str | Path | None = None,
    dest_dir: str | Path | None = None,
    names: Iterable[str] = ASSIGNMENTS,
) -> dict[str, str]:
    """``{name: unified diff}`` for every student version that differs from a fresh generation."""
    src_default, dest_default = default_dirs()
    source_dir = Path(source_dir) if source_dir is not None else src_default
    dest_dir = Path(dest_dir) if dest_dir is not None else dest_default
    diffs = {}
    for name in names:
        want = _student_text(source_dir / name)
        path = dest_dir / name
        have = path.read_text(encoding="utf-8") if path.exists() else ""
        if have != want:
            diffs[name] = "".join(
                difflib.unified_diff(
                    have.splitlines(True),
                    want.splitlines(True),
                    f"{path} (committed)",
                    f"{path} (regenerated)",
                    n=1,
                )
            )
    return diffs


def main(argv: list[str] | None = None) -> int:
    """``python -m coremtl_lite.assignments generate [--check] [--source DIR] [--dest DIR]``."""
    parser = argparse.ArgumentParser(
        prog="python -m coremtl_lite.assignments",
        description="Course assignments: generate the student versions.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    gen = sub.add_parser(
        "generate", help="write the student versions (solutions stubbed, hidden tests removed)"
    )
    gen.add_argument(
        "--source", default=None, help="folder of the solution notebooks (default: tutorials/assignments)"
    )
    gen.add_argument("--dest", default=None, help="output folder (default: tutorials/assignments/student)")
    gen.add_argument(
        "--check",
        action="store_true",
        help="write nothing; exit 1 and print a diff if the student versions are out of date",
    )
    args = parser.parse_args(argv)
    if args.check:
        diffs = outdated(args.source, args.dest)
        for text in diffs.values():
            print(text)
        print(
            f"{len(diffs)} student notebook(s) out of date" if diffs else "student notebooks are up to date"
        )
        return 1 if diffs else 0
    for path in generate(args.source, args.dest):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
