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


def pytest_collectstart(collector):
    if getattr(collector, "fspath", None) is not None and collector.fspath.ext == ".ipynb":
        if hasattr(collector, "skip_compare"):
            collector.skip_compare += _SKIP_MIMETYPES
