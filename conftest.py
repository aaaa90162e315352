"""pytest configuration shared by unit tests and ``pytest --nbval`` runs of the tutorials."""

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
