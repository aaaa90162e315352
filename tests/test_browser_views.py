"""What a reader sees, in a real browser (headless Chromium through Playwright): the committed benchmark
report opened offline, and every tutorial opened as stored in JupyterLab (nothing executed).

* ``results/cpu/report.html`` from ``file://`` with every network request refused: each plotly figure
  must draw (an SVG inside every ``.plotly-graph-div``) and nothing may be fetched from the network.
* Each tutorial in JupyterLab (the notebook copied to a temporary folder; cells rendered all at once):
  its stored widgets are drawn (not their text fallback), every stored plotly figure is drawn, no
  stderr box is shown, and opening it does not mark it modified (the signatures that make it open
  trusted are checked by test_notebook_hygiene.py).
  Screenshots of every notebook go to ``test-artifacts/tutorials/`` (top to bottom, in parts).

Without ``/usr/bin/chromium`` these tests are skipped locally and fail when ``$CI`` is set.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import nbformat
import pytest
from test_browser import CHROMIUM, CHROMIUM_ARGS, _require_browser, start_lab, stop_lab

pytestmark = [pytest.mark.browser, pytest.mark.kernels]

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts"
REPORT = ROOT / "results" / "cpu" / "report.html"
TUTORIALS = sorted((ROOT / "tutorials").glob("*.ipynb"))
PLOTLY = "application/vnd.plotly.v1+json"
WIDGET = "application/vnd.jupyter.widget-view+json"
MAX_PARTS = 12  # screenshots per notebook, one viewport each


@pytest.fixture(scope="module")
def browser():
    _require_browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield b
        finally:
            b.close()


@pytest.mark.timeout(300)
def test_committed_report_draws_every_figure_offline(browser):
    ARTIFACTS.mkdir(exist_ok=True)
    page = browser.new_page(viewport={"width": 1300, "height": 1000})
    remote: list[str] = []

    def refuse(route):
        remote.append(route.request.url)
        route.abort()

    page.route("http://**/*", refuse)
    page.route("https://**/*", refuse)
    page.goto(REPORT.as_uri())
    n_figures = REPORT.read_text().count('class="plotly-graph-div"')
    assert n_figures >= 1
    page.wait_for_function(
        f"document.querySelectorAll('.plotly-graph-div .main-svg').length >= {n_figures}", timeout=120_000
    )
    drawn = page.evaluate(
        "[...document.querySelectorAll('.plotly-graph-div')].map(d => "
        "d.querySelectorAll('.main-svg .trace, .main-svg .bars, .main-svg .point').length)"
    )
    page.screenshot(path=str(ARTIFACTS / "report_cpu.png"), full_page=True)
    assert len(drawn) == n_figures and all(n > 0 for n in drawn), drawn
    assert not remote, f"the report tried to fetch {remote[:3]}"
    tables = page.evaluate(
        "[...document.querySelectorAll('table.coremtl-table')].map(t => "
        "[t.rows.length, t.getBoundingClientRect().height])"
    )
    assert tables and all(h >= rows * 15 for rows, h in tables), tables  # as tall as its rows, not clipped
    page.close()


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """JupyterLab serving copies of the tutorials, rendering all cells at once (no windowing)."""
    _require_browser()
    workdir = tmp_path_factory.mktemp("lab")
    for nb in TUTORIALS:
        shutil.copy(nb, workdir / nb.name)
    settings = workdir / ".settings" / "@jupyterlab"
    for plugin, value in (
        ("notebook-extension/tracker", {"windowingMode": "none"}),
        ("apputils-extension/notification", {"fetchNews": "false", "checkForUpdates": False}),
    ):
        (settings / plugin).parent.mkdir(parents=True, exist_ok=True)
        (settings / f"{plugin}.jupyterlab-settings").write_text(json.dumps(value))
    ARTIFACTS.mkdir(exist_ok=True)
    proc, port, token = start_lab(
        workdir,
        ARTIFACTS / "jupyterlab_views.log",
        extra_args=(f"--LabApp.user_settings_dir={workdir / '.settings'}",),
    )
    try:
        yield port, token
    finally:
        stop_lab(proc)


def _expected(nb) -> tuple[int, int]:
    """(plotly figures, widget views) stored in the notebook's outputs."""
    outs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    return (sum(PLOTLY in o.get("data", {}) for o in outs), sum(WIDGET in o.get("data", {}) for o in outs))


#: a stored plotly output counts as drawn when JupyterLab's plotly renderer shows either the live figure
#: (an SVG) or, until it is scrolled to, the stored PNG beside it (plotly's renderer shows that first)
_DRAWN_PLOTS = (
    "() => [...document.querySelectorAll('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-RenderedPlotly')].filter(el => "
    "el.querySelector('.main-svg') || [...el.querySelectorAll('img')].some(i => i.naturalWidth > 0))"
    ".length"
)


def _dismiss_dialogs(page) -> list[str]:
    """Close JupyterLab dialogs (e.g. a kernel restart on a loaded machine); return their texts."""
    texts = []
    while page.locator(".jp-Dialog").count():
        texts.append(page.locator(".jp-Dialog").first.inner_text())
        page.keyboard.press("Escape")
        time.sleep(0.3)
        if len(texts) > 5:
            break
    return texts


def _screenshots(page, folder: Path, stem: str) -> list[Path]:
    """Viewport screenshots from the top of the notebook to its end (at most MAX_PARTS)."""
    scroller = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-WindowedPanel-outer").first
    paths = []
    scroller.evaluate("el => el.scrollTo(0, 0)")
    for k in range(MAX_PARTS):
        time.sleep(0.4)
        _dismiss_dialogs(page)
        path = folder / f"{stem}_{k + 1:02d}.png"
        page.screenshot(path=str(path))
        paths.append(path)
        done = scroller.evaluate(
            "el => { const before = el.scrollTop; el.scrollBy(0, el.clientHeight - 80); "
            "return el.scrollTop === before; }"
        )
        if done:
            break
    return paths


@pytest.mark.timeout(600)
@pytest.mark.parametrize("path", TUTORIALS, ids=[p.stem for p in TUTORIALS])
def test_tutorial_as_stored_in_jupyterlab(browser, lab, path):
    port, token = lab
    nb = nbformat.read(path, as_version=4)
    n_plotly, n_widgets = _expected(nb)
    folder = ARTIFACTS / "tutorials"
    folder.mkdir(parents=True, exist_ok=True)
    page = browser.new_page(viewport={"width": 1400, "height": 1100})
    try:
        page.goto(f"http://127.0.0.1:{port}/lab/workspaces/{path.stem}/tree/{path.name}?token={token}&reset")
        page.wait_for_selector(".jp-Notebook-cell", timeout=90_000)
        deadline = time.time() + 90
        while time.time() < deadline:  # stored figures and widgets render asynchronously
            plots = page.evaluate(_DRAWN_PLOTS)
            widgets = page.locator(
                ".jp-NotebookPanel:not(.lm-mod-hidden) .jupyter-widgets.widget-container, "
                ".jp-NotebookPanel:not(.lm-mod-hidden) .jupyter-widgets.widget-inline-hbox, "
                ".jp-NotebookPanel:not(.lm-mod-hidden) .jupyter-widgets.widget-box"
            ).count()
            if plots >= n_plotly and (n_widgets == 0 or widgets > 0):
                break
            time.sleep(1)
        time.sleep(2)
        shots = _screenshots(page, folder, path.stem)
        plots = page.evaluate(_DRAWN_PLOTS)
        plotly_divs = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-RenderedPlotly").count()
        widget_text = [
            t
            for t in page.locator(
                ".jp-NotebookPanel:not(.lm-mod-hidden) .jp-OutputArea-output"
            ).all_inner_texts()
            if "Box(children=" in t or "Error displaying widget" in t or "model not found" in t
        ]
        stderr = page.locator(
            ".jp-NotebookPanel:not(.lm-mod-hidden) .jp-OutputArea-output[data-mime-type="
            "'application/vnd.jupyter.stderr']"
        ).count()
        dirty = page.locator(".jp-mod-dirty").count()
    finally:
        page.close()
    assert shots
    # (a widget's stored Output area may hold figures too, so there can be more than the cell outputs)
    assert plotly_divs >= n_plotly, f"{path.name}: {plotly_divs} plotly figures shown of {n_plotly} stored"
    assert plots == plotly_divs, f"{path.name}: only {plots} of {plotly_divs} figures drew (blank panels)"
    if n_widgets:
        assert widgets > 0 and not widget_text, f"{path.name}: stored widgets not drawn: {widget_text[:2]}"
    assert stderr == 0, f"{path.name}: {stderr} stderr (warning) boxes"
    assert dirty == 0, f"{path.name} is marked modified right after opening"
