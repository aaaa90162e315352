"""pytest configuration shared by unit tests and ``pytest --nbval`` runs of the tutorials."""

import pytest

# plotly writes random div ids and widget views carry random model ids: their outputs can never match
# between runs, so nbval compares only the deterministic text outputs of a cell.
_SKIP_MIMETYPES = (
    "text/html",
    "application/javascript",
    "application/vnd.plotly.v1+json",
    "application/vnd.jupyter.widget-view+json",
    "image/png",
)
_WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


def pytest_collectstart(collector):
    if getattr(collector, "fspath", None) is not None and collector.fspath.ext == ".ipynb":
        if hasattr(collector, "skip_compare"):
            collector.skip_compare += _SKIP_MIMETYPES


def _without_widget_text(outputs):
    """A widget's plain-text form differs by design: a live kernel sends the widget's repr, the stored
    notebook a summary of its final state (scripts/execute_notebooks.py), so it is not compared."""
    import copy

    out = []
    for o in outputs:
        data = o.get("data", {})
        if _WIDGET_VIEW in data and "text/plain" in data:
            o = copy.deepcopy(o)
            del o["data"]["text/plain"]
        out.append(o)
    return out


def pytest_configure(config):
    try:
        from nbval.plugin import IPyNbCell
    except ImportError:
        return
    if getattr(IPyNbCell.compare_outputs, "_coremtl", False):
        return
    original = IPyNbCell.compare_outputs

    def compare_outputs(self, test, ref, skip_compare=None):
        return original(self, _without_widget_text(test), _without_widget_text(ref), skip_compare)

    compare_outputs._coremtl = True
    IPyNbCell.compare_outputs = compare_outputs


@pytest.hookimpl(tryfirst=True)  # before ``-m`` selects by marker
def pytest_collection_modifyitems(config, items):
    """Mark every notebook cell ``kernels``, like the tests that start Jupyter kernels (nbgrader,
    JupyterLab, nbclient), which carry the mark themselves.

    ``bash scripts/run test`` runs two pytest processes side by side: ``-m kernels`` (every notebook
    and these tests, one after the other) and ``-m "not kernels"``. The kernels stay in one process
    because the tutorials share their trained runs (03 trains the run that 04 and 05 load from
    ``runs/tutorials/``), and because two kernels started at once in two processes can be handed the
    same port and hang (jupyter_client issue 487).
    """
    for item in items:
        if item.nodeid.split("::")[0].endswith(".ipynb"):
            item.add_marker(pytest.mark.kernels)
