"""What a reader sees in the stored notebooks: no warnings, no machine paths, one figure per plot, PNG
fallbacks, widget state, signatures (``scripts/execute_notebooks.py`` stores them so; see its doc).

A failure here names the notebook and the cell. Fix it at its source, then re-execute the notebook with
``PYTHONPATH=. python scripts/execute_notebooks.py tutorials/<nb>.ipynb`` (cpu profile) and commit it.
An unsigned notebook means set-up did not run: ``bash scripts/run setup`` signs every notebook.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook, new_output

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("execute_notebooks", ROOT / "scripts" / "execute_notebooks.py")
nbtool = importlib.util.module_from_spec(_spec)
sys.modules["execute_notebooks"] = nbtool
_spec.loader.exec_module(nbtool)

NOTEBOOKS = sorted((ROOT / "tutorials").glob("*.ipynb")) + sorted(
    (ROOT / "tutorials" / "assignments").glob("*.ipynb")
)
STUDENT = sorted((ROOT / "tutorials" / "assignments" / "student").glob("*.ipynb"))
_ids = [str(p.relative_to(ROOT / "tutorials")) for p in NOTEBOOKS]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids)
def test_stored_outputs_are_clean(path):
    problems = nbtool.hygiene_problems(nbformat.read(path, as_version=4))
    assert not problems, (
        f"{path.name}: re-execute it with scripts/execute_notebooks.py after fixing:\n  "
        + "\n  ".join(problems)
    )


@pytest.mark.parametrize("path", NOTEBOOKS + STUDENT, ids=_ids + [f"student/{p.name}" for p in STUDENT])
def test_notebook_is_signed_after_setup(path):
    assert nbtool.is_signed(nbformat.read(path, as_version=4)), (
        f"{path} is not trusted here: `bash scripts/run setup` signs the notebooks (jupyter trust)"
    )


# ------------------------------------------------------------------ the checker itself finds each problem
def _nb(*outputs, **cells_kw):
    cell = new_code_cell("x = 1", outputs=list(outputs))
    return new_notebook(cells=[cell], **cells_kw)


def _plotly(title: str, png: bool = True):
    data = {
        "application/vnd.plotly.v1+json": {
            "data": [{"type": "scatter", "y": [1, 2]}],
            "layout": {"title": {"text": title}},
        }
    }
    if png:
        data["image/png"] = "iVBORw0KGgo="
    return new_output("display_data", data=data)


def test_checker_finds_each_problem():
    assert nbtool.hygiene_problems(_nb(_plotly("a"), _plotly("b"))) == []
    problems = nbtool.hygiene_problems(_nb(new_output("stream", name="stderr", text="careful\n")))
    assert any("stderr" in p for p in problems)
    problems = nbtool.hygiene_problems(
        _nb(new_output("stream", name="stdout", text=f"{sys.prefix}/lib/x.py:3: UserWarning: old\n"))
    )
    assert any("machine path" in p for p in problems) and any("warning" in p for p in problems)
    problems = nbtool.hygiene_problems(_nb(_plotly("live"), _plotly("live"), _plotly("live")))
    assert problems == ["cell 0: 3 copies of the figure 'live'"]
    assert nbtool.hygiene_problems(_nb(_plotly("a", png=False))) == [
        "cell 0: a plotly figure without its image/png fallback"
    ]
    view = new_output(
        "display_data",
        data={
            "application/vnd.jupyter.widget-view+json": {
                "model_id": "0" * 32,
                "version_major": 2,
                "version_minor": 0,
            },
            "text/plain": "HBox(...)",
        },
    )
    assert any("widget state" in p for p in nbtool.hygiene_problems(_nb(view)))
    frozen = _nb(
        new_output(
            "display_data",
            data={
                "application/vnd.jupyter.widget-view+json": {
                    "model_id": "b" * 32,
                    "version_major": 2,
                    "version_minor": 0,
                },
                "text/plain": "epochs:   0%| | 0/6",
            },
        )
    )
    frozen.metadata["widgets"] = {
        "application/vnd.jupyter.widget-state+json": {
            "state": {"b" * 32: {"model_name": "FloatProgressModel", "state": {"value": 6, "max": 6}}}
        }
    }
    assert any("stale" in p for p in nbtool.hygiene_problems(frozen))
    frozen.cells[0].outputs[0]["data"]["text/plain"] = "6/6"
    assert nbtool.hygiene_problems(frozen) == []
    error = new_output("error", ename="ValueError", evalue="bad", traceback=["ValueError: bad"])
    assert any("error output" in p for p in nbtool.hygiene_problems(_nb(error)))


def test_widget_text_reads_the_final_state():
    ref = "IPY_MODEL_"
    state = {
        "b" * 32: {
            "model_name": "HBoxModel",
            "state": {"children": [ref + "c" * 32, ref + "d" * 32, ref + "e" * 32]},
        },
        "c" * 32: {"model_name": "HTMLModel", "state": {"value": "epochs: 100%"}},
        "d" * 32: {"model_name": "FloatProgressModel", "state": {"value": 6, "max": 6}},
        "e" * 32: {"model_name": "HTMLModel", "state": {"value": "&nbsp;6/6 [00:10&lt;00:00]"}},
    }
    assert nbtool.widget_text("b" * 32, state) == "epochs: 100% 6/6 6/6 [00:10&lt;00:00]"


@pytest.mark.slow
@pytest.mark.kernels
def test_live_curves_store_one_figure_and_no_frozen_bars(tmp_path):
    """Run a tiny notebook in a real kernel: LiveCurves redraws one output; a closed tqdm bar is not stored."""
    source = (
        "from coremtl_lite.report import LiveCurves\n"
        "from coremtl_lite.train import History\n"
        "from tqdm.auto import tqdm\n"
        "live = LiveCurves(keys=['loss/a'], every=1, smooth_window=1).show()\n"
        "h = History(steps=[])\n"
        "for s in tqdm(range(4), leave=False):\n"
        "    h.steps.append({'step': s, 'loss/a': 1.0 / (s + 1)})\n"
        "    live.draw(h)\n"
        "for s in tqdm(range(2), desc='kept'):\n"
        "    pass\n"
    )
    nb = new_notebook(
        cells=[new_code_cell(source)],
        metadata={"kernelspec": {"name": "python3", "display_name": "Python 3"}},
    )
    closed = nbtool.execute(nb, tmp_path, "ci", timeout=120)
    nbtool.tidy_widgets(nb, closed)
    outs = nb.cells[0].outputs
    figures = [o for o in outs if "application/vnd.plotly.v1+json" in o.get("data", {})]
    assert len(figures) == 1
    assert figures[0]["data"]["application/vnd.plotly.v1+json"]["data"][0]["y"] == pytest.approx(
        [1, 1 / 2, 1 / 3, 1 / 4]
    )
    widgets = [o for o in outs if "application/vnd.jupyter.widget-view+json" in o.get("data", {})]
    assert (
        len(widgets) == 1
        and "kept" in widgets[0]["data"]["text/plain"]
        and "2/2" in widgets[0]["data"]["text/plain"]
    )
    assert not [p for p in nbtool.hygiene_problems(nb) if "png" not in p]
