"""The course assignments through real nbgrader, as an instructor runs it (tutorials/assignments/README.md).

One course folder in a temporary directory with the committed ``nbgrader_config.py``:
``generate_assignment`` for the four assignments (its release versions must match the committed
student versions, locks included); for two of them (:data:`GRADED`, to keep CI short) two students --
``solution`` hands in the solution notebook, ``blank`` the unfilled student version -- then
``autograde`` (full autograded marks vs 0) and ``generate_feedback`` (the hidden tests must not reach
the students). Notebooks run in the ci profile.
"""

from __future__ import annotations

import html
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from coremtl_lite.assignments import ASSIGNMENTS, BEGIN_HIDDEN, END_HIDDEN

pytest.importorskip("nbgrader")
pytestmark = [pytest.mark.slow, pytest.mark.kernels]

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "tutorials" / "assignments"
NAMES = {name: name.split("_")[0] for name in ASSIGNMENTS}  # a1_ood_floor.ipynb -> a1
#: autograded and given feedback in CI: the NumPy-only assignment and one that trains a model (each
#: costs two notebook runs; all four are generated and compared with the committed student versions)
GRADED = ("a1_ood_floor.ipynb", "a3_counterfactual_cfa.ipynb")


def _nbgrader(course: Path, *args: str) -> str:
    env = dict(
        os.environ,
        COREMTL_PROFILE="ci",
        OMP_NUM_THREADS="1",
        PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        PATH=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
    )  # alembic
    proc = subprocess.run(
        [sys.executable, "-m", "nbgrader", *args],
        cwd=course,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, (
        f"nbgrader {' '.join(args)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    )
    return proc.stdout + proc.stderr


def _hidden_lines(nb) -> list[str]:
    lines = []
    for cell in nb.cells:
        for block in re.findall(
            re.escape(BEGIN_HIDDEN) + r"(.*?)" + re.escape(END_HIDDEN), cell.source, re.S
        ):
            lines += [ln.strip() for ln in block.splitlines() if len(ln.strip()) > 25]
    return lines


@pytest.fixture(scope="module")
def course(tmp_path_factory):
    course = tmp_path_factory.mktemp("course")
    shutil.copy(SOURCE / "nbgrader_config.py", course / "nbgrader_config.py")
    for name, aid in NAMES.items():
        (course / "source" / aid).mkdir(parents=True)
        shutil.copy(SOURCE / name, course / "source" / aid / name)
        _nbgrader(course, "generate_assignment", aid, "--force")
    for student in ("solution", "blank"):
        _nbgrader(course, "db", "student", "add", student)
        for name in GRADED:
            aid = NAMES[name]
            (course / "submitted" / student / aid).mkdir(parents=True)
            handed_in = SOURCE / name if student == "solution" else SOURCE / "student" / name
            shutil.copy(handed_in, course / "submitted" / student / aid / name)
    logs = {NAMES[name]: _nbgrader(course, "autograde", NAMES[name], "--force") for name in GRADED}
    for name in GRADED:
        _nbgrader(course, "generate_feedback", NAMES[name], "--force")
    return course, logs


def _score(course: Path, aid: str, student: str):
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gb:
        sub = gb.find_submission(aid, student)
        return sub.code_score, sub.max_code_score


@pytest.mark.parametrize("name", ASSIGNMENTS)
def test_release_version_is_the_committed_student_version(course, name):
    course, _ = course
    release = nbformat.read(course / "release" / NAMES[name] / name, as_version=4)
    committed = nbformat.read(SOURCE / "student" / name, as_version=4)
    assert len(release.cells) == len(committed.cells)
    for ours, theirs in zip(committed.cells, release.cells):
        assert ours.source == theirs.source
        for key in ("deletable", "editable"):
            assert ours.metadata.get(key, True) == theirs.metadata.get(key, True), (
                name,
                key,
                ours.source[:60],
            )
        meta = {
            k: v for k, v in theirs.metadata.get("nbgrader", {}).items() if k not in ("checksum", "cell_type")
        }
        assert ours.metadata.get("nbgrader", {}) == meta
    assert any(c.metadata.get("editable") is False for c in committed.cells)  # the test cells are locked


@pytest.mark.parametrize("name", GRADED)
def test_solution_gets_full_marks_and_blank_gets_zero(course, name):
    course, _ = course
    score, top = _score(course, NAMES[name], "solution")
    assert top > 0 and score == pytest.approx(top), f"{name}: the solution scored {score} of {top}"
    score, top = _score(course, NAMES[name], "blank")
    assert score == 0, f"{name}: the unfilled student version scored {score} of {top}"


@pytest.mark.parametrize("name", GRADED)
def test_feedback_does_not_reveal_hidden_tests(course, name):
    course, logs = course
    hidden = _hidden_lines(nbformat.read(SOURCE / name, as_version=4))
    assert hidden, f"{name} has no hidden tests"
    for student in ("solution", "blank"):
        page = html.unescape(
            re.sub(
                r"<[^>]+>",
                "",
                (course / "feedback" / student / NAMES[name] / name.replace(".ipynb", ".html")).read_text(),
            )
        )
        assert "HIDDEN TESTS" not in page
        leaked = [ln for ln in hidden if ln in page]
        assert not leaked, f"{student}'s feedback on {name} shows hidden test lines: {leaked[:3]}"
        if student == "blank":
            assert "Feedback: ✗" in page and "Traceback (most recent call last)" not in page
    # the checksum message the instructor guide explains: nbgrader restores the hidden tests into
    # the students' locked test cells, whose checksum therefore differs
    assert "Attribute 'checksum' for cell" in logs[NAMES[name]]
