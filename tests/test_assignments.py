"""Tests of the course assignments: feedback helpers, the student-version generator, the notebooks."""

import contextlib
import io
import os
import re
from pathlib import Path

import nbformat
import numpy as np
import pytest
import torch
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from coremtl_lite import assignments as A

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "tutorials" / "assignments"
STUDENT = SOURCE / "student"


def _meta(gid, grade, solution, locked, points=None):
    meta = {
        "grade": grade,
        "grade_id": gid,
        "locked": locked,
        "schema_version": 3,
        "solution": solution,
        "task": False,
    }
    if points is not None:
        meta["points"] = points
    return meta


def _cell(kind, source, meta=None):
    cell = new_code_cell(source) if kind == "code" else new_markdown_cell(source)
    if meta is not None:
        cell.metadata["nbgrader"] = meta
    return cell


def _toy_notebook():
    return new_notebook(
        cells=[
            _cell("code", "import math"),
            _cell(
                "code",
                'def f(x):\n    """doc"""\n    ### BEGIN SOLUTION\n    y = x + 1\n    return y\n'
                "    ### END SOLUTION\n\n\ndef g():\n    ### BEGIN SOLUTION\n    return 2\n    ### END SOLUTION",
                _meta("sol", False, True, False),
            ),
            _cell(
                "code",
                "assert f(1) == 2\n### BEGIN HIDDEN TESTS\nassert f(2) == 3\n### END HIDDEN TESTS\n",
                _meta("test", True, False, True, 2),
            ),
            _cell(
                "markdown",
                "Intro\n### BEGIN SOLUTION\nThe answer.\n### END SOLUTION\nOutro",
                _meta("answer", True, True, False, 1),
            ),
            _cell("code", "x = 1", _meta("whole", False, True, False)),
        ]
    )


def _exec_cells(nb, grade_ids, namespace):
    """Run the setup cell (index 1) and the cells with the given grade ids in-process; return stdout."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(nb.cells[1].source, namespace)  # noqa: S102 - the assignment's own setup cell
        for gid in grade_ids:
            cell = next(c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") == gid)
            exec(cell.source, namespace)  # noqa: S102
    return out.getvalue()


# ------------------------------------------------------------------------------------ feedback
def test_check_prints_on_success_and_explains_on_failure(capsys):
    A.check("one is one", 1 == 1, hint="unused")
    assert capsys.readouterr().out == "✓ one is one\n"
    with pytest.raises(A.Feedback, match=r"✗ two is one\n  Hint: look at the sum"):
        A.check("two is one", 2 == 1, hint="look at the sum")
    assert issubclass(A.Feedback, AssertionError)  # nbgrader counts it as a failed test
    with pytest.raises(A.Feedback, match="could not be evaluated"):
        A.check("an array is not a truth value", np.array([1, 2]) == 1, hint="h")


def test_check_close_reports_values_shapes_and_nans(capsys):
    A.check_close("close", torch.tensor(1.0 + 1e-9), 1.0, hint="h")
    assert capsys.readouterr().out == "✓ close\n"
    with pytest.raises(A.Feedback, match=r"(?s)Expected ≈ 2\n.*Got +1\.5\n.*Hint: h"):
        A.check_close("far", 1.5, 2.0, hint="h")
    with pytest.raises(A.Feedback, match=r"Expected shape \(3,\), got shape \(2,\)"):
        A.check_close("shape", np.zeros(2), np.zeros(3), hint="h")
    with pytest.raises(A.Feedback, match="NaN or inf"):
        A.check_close("nan", float("nan"), 0.0, hint="h")
    with pytest.raises(A.Feedback, match="got None: did your function forget to `return`"):
        A.check_close("none", None, 0.0, hint="h")
    with pytest.raises(A.Feedback, match="Expected a number or an array of numbers, got str"):
        A.check_close("text", "abc", 0.0, hint="h")


def test_attempt_turns_not_implemented_into_feedback():
    def stub(x):
        raise NotImplementedError()

    def buggy(x):
        return x / 0

    assert A.attempt(lambda x, y=1: x + y, 1, y=2) == 3
    with pytest.raises(A.Feedback, match=r"`stub` is not implemented yet") as info:
        A.attempt(stub, 1)
    assert info.value.__cause__ is None and info.value.__suppress_context__
    with pytest.raises(ZeroDivisionError):  # a real bug keeps its own traceback
        A.attempt(buggy, 1)


def test_need_names_the_missing_variable():
    namespace = {"A": A, "present": 1}
    exec("A.need('present')", namespace)  # noqa: S102
    with pytest.raises(A.Feedback, match=r"`absent` not computed yet"):
        exec("A.need('present', 'absent')", namespace)  # noqa: S102


# ------------------------------------------------------------------------------- the generator
def test_student_notebook_replaces_solutions_and_removes_hidden_tests():
    nb = _toy_notebook()
    nb.cells[0].outputs = [nbformat.v4.new_output("stream", text="hi")]
    nb.cells[0].execution_count = 3
    nb.cells[0].metadata["execution"] = {"iopub.status.busy": "x"}
    original = nbformat.writes(nb)
    student = A.make_student_notebook(nb)
    assert nbformat.writes(nb) == original  # the input is not modified
    src = [c.source for c in student.cells]
    assert src[0] == "import math"
    assert src[1] == (
        'def f(x):\n    """doc"""\n    # YOUR CODE HERE\n    raise NotImplementedError()\n\n\n'
        "def g():\n    # YOUR CODE HERE\n    raise NotImplementedError()"
    )
    assert src[2] == "assert f(1) == 2"
    assert src[3] == "Intro\nYOUR ANSWER HERE\nOutro"
    assert src[4] == A.CODE_STUB  # a solution cell without delimiters is replaced whole (nbgrader's rule)
    first = student.cells[0]
    assert first.outputs == [] and first.execution_count is None and "execution" not in first.metadata
    assert student.cells[2].metadata["nbgrader"]["points"] == 2  # metadata kept for nbgrader


def test_validate_flags_what_nbgrader_would_reject():
    assert A.validate_nbgrader_metadata(_toy_notebook()) == []
    nb = _toy_notebook()
    nb.cells[2].metadata["nbgrader"]["grade_id"] = "sol"  # duplicate
    del nb.cells[3].metadata["nbgrader"]["points"]
    nb.cells[4].metadata["nbgrader"]["locked"] = True  # a locked solution
    nb.cells[0].source = "### BEGIN SOLUTION\nx"  # delimiters without metadata
    problems = "\n".join(A.validate_nbgrader_metadata(nb, "toy"))
    assert "duplicate grade_id 'sol'" in problems
    assert "graded cells need points" in problems
    assert "solution cells must not be locked" in problems
    assert "toy cell 0: has nbgrader delimiters but no nbgrader metadata" in problems
    nb = _toy_notebook()
    nb.cells[1].source = "### BEGIN SOLUTION\nx = 1"
    nb.cells[2].metadata["nbgrader"]["locked"] = False
    problems = "\n".join(A.validate_nbgrader_metadata(nb))
    assert "never closed" in problems and "must be locked code cells" in problems
    with pytest.raises(ValueError, match="never closed"):
        A.make_student_notebook(nb)


def test_generate_and_check_on_a_temporary_folder(tmp_path, capsys):
    src, dest = tmp_path / "src", tmp_path / "dest"
    src.mkdir()
    nbformat.write(_toy_notebook(), src / "toy.ipynb")
    assert A.outdated(src, dest, names=["toy.ipynb"]).keys() == {"toy.ipynb"}
    first = A.generate(src, dest, names=["toy.ipynb"])[0].read_bytes()
    assert A.generate(src, dest, names=["toy.ipynb"])[0].read_bytes() == first  # deterministic
    assert A.outdated(src, dest, names=["toy.ipynb"]) == {}
    (dest / "toy.ipynb").write_text(first.decode().replace("YOUR ANSWER HERE", "an answer"))
    diff = A.outdated(src, dest, names=["toy.ipynb"])["toy.ipynb"]
    assert "-" in diff and "YOUR ANSWER HERE" in diff
    with pytest.raises(FileNotFoundError, match="missing.ipynb"):
        A.generate(src, dest, names=["missing.ipynb"])


# ------------------------------------------------------------------------------ the assignments
def test_solution_notebooks_are_valid_and_executed():
    total = {}
    for name in A.ASSIGNMENTS:
        nb = nbformat.read(SOURCE / name, as_version=4)
        assert A.validate_nbgrader_metadata(nb, name) == []
        metas = [m for _, m in A.nbgrader_cells(nb)]
        assert any(m["grade"] and not m["solution"] for m in metas), f"{name} has no autograded test cell"
        assert any(m["solution"] and not m["grade"] for m in metas), f"{name} has no code to write"
        assert any(A.BEGIN_HIDDEN in c.source for c in nb.cells), f"{name} has no hidden tests"
        total[name] = sum(m.get("points", 0) for m in metas if m["grade"])
        announced = re.search(r"· (\d+) points\*", nb.cells[0].source)
        assert announced and int(announced.group(1)) == total[name], (
            f"{name}: the title announces the wrong total"
        )
        for i, cell in enumerate(nb.cells):
            if cell.cell_type == "code":
                assert cell.execution_count is not None, f"{name} cell {i} was not executed (store outputs)"
                errors = [o for o in cell.outputs if o.output_type == "error"]
                assert not errors, f"{name} cell {i} stored an error: {errors[0].evalue[:200]}"
    assert all(points >= 8 for points in total.values()), total


def test_committed_student_versions_are_up_to_date(tmp_path):
    fresh = A.generate(SOURCE, tmp_path)
    for path in fresh:
        committed = STUDENT / path.name
        assert committed.exists(), (
            f"{committed} is missing: run `python -m coremtl_lite.assignments generate`"
        )
        assert committed.read_bytes() == path.read_bytes(), (
            f"{committed} is out of date: run `python -m coremtl_lite.assignments generate`"
        )
    assert A.main(["generate", "--check"]) == 0


def test_student_versions_hold_no_solutions():
    for name in A.ASSIGNMENTS:
        text = (STUDENT / name).read_text()
        for marker in (A.BEGIN_SOLUTION, A.END_SOLUTION, A.BEGIN_HIDDEN, A.END_HIDDEN):
            assert marker not in text, f"student/{name} still contains {marker!r}"
        nb = nbformat.read(STUDENT / name, as_version=4)
        assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code")
        stubs = [
            c
            for c in nb.cells
            if "# YOUR CODE HERE\n" in c.source and "raise NotImplementedError()" in c.source
        ]
        assert stubs, f"student/{name} has no code stub"


def test_a1_feedback_for_a_wrong_formula():
    nb = nbformat.read(SOURCE / "a1_ood_floor.ipynb", as_version=4)
    namespace = {}
    _exec_cells(nb, ["a1-closed-form"], namespace)
    correct = namespace["w_star"]
    namespace["w_star"] = lambda theta, var_s, var_r: correct(theta, var_r, var_s)  # variances swapped
    with pytest.raises(A.Feedback, match=r"(?s)✗ w\* at theta = pi/4.*which variance multiplies cos\^2"):
        _exec_cells(nb, ["a1-test-w-star"], namespace)
    namespace["w_star"] = correct
    out = _exec_cells(nb, ["a1-test-w-star", "a1-test-gap"], namespace)
    assert out.count("✓") == 10 and "✗" not in out


def test_a2_feedback_for_uncentred_cka():
    nb = nbformat.read(SOURCE / "a2_cka_independence.ipynb", as_version=4)
    namespace = {}

    def uncentred(x, y):
        return (y.T @ x).pow(2).sum() / ((x.T @ x).pow(2).sum().sqrt() * (y.T @ y).pow(2).sum().sqrt())

    namespace["linear_cka"] = uncentred
    with pytest.raises(
        A.Feedback, match=r"(?s)invariant to a rotation, a scale and a shift.*centre the columns"
    ):
        _exec_cells(nb, ["a2-test-cka-basics"], namespace)


@pytest.mark.slow
@pytest.mark.kernels
@pytest.mark.parametrize("name", A.ASSIGNMENTS)
def test_unfilled_student_version_fails_with_teaching_messages(name, monkeypatch):
    """Run the student notebook as handed out: graded cells fail with feedback, nothing else breaks."""
    from nbclient import NotebookClient

    monkeypatch.setenv("COREMTL_PROFILE", "ci")
    nb = nbformat.read(STUDENT / name, as_version=4)
    NotebookClient(
        nb,
        timeout=300,
        allow_errors=True,
        kernel_name="python3",
        resources={"metadata": {"path": str(STUDENT)}},
    ).execute()
    graded = 0
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        meta = cell.metadata.get("nbgrader", {})
        errors = [o for o in cell.outputs if o.output_type == "error"]
        where = f"student/{name} cell {i} ({meta.get('grade_id', 'plain')})"
        if meta.get("grade") and not meta.get("solution"):
            graded += 1
            assert errors, f"{where}: an unfilled assignment must not earn this cell's points"
            assert errors[0].ename == "Feedback", (
                f"{where}: raised {errors[0].ename}: {errors[0].evalue[:300]}"
            )
            assert "not implemented yet" in errors[0].evalue or "not computed yet" in errors[0].evalue, (
                f"{where}: unexpected message {errors[0].evalue[:300]}"
            )
        else:
            # other cells may only stop at a stub or at a feedback guard (A.need), never a NameError etc.
            assert all(e.ename in ("NotImplementedError", "Feedback") for e in errors), (
                f"{where}: {errors[0].ename}: {errors[0].evalue[:300]}"
            )
    assert graded >= 3
    assert os.environ["COREMTL_PROFILE"] == "ci"
