"""A real-browser test of tutorial 03's residual-swap widget (JupyterLab + headless Chromium).

Starts JupyterLab on 127.0.0.1 (a free port, a random token, ``COREMTL_PROFILE=ci``) in a temporary
folder holding a copy of the notebook (so autosave never touches the repository), opens the notebook
in Debian's Chromium through Playwright, runs all cells, then moves the α slider and changes the
donor, and checks that the displayed counterfactual image changed each time. Screenshots go to
``test-artifacts/``. The server is stopped by its PID.

Without ``/usr/bin/chromium`` the test is skipped locally, and fails when ``$CI`` is set (CI installs
it, see ``.ci/run``).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "tutorials" / "03_counterfactuals.ipynb"
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
RUN_TIMEOUT_S = 420  # Run All Cells in the ci profile, including a small training when no checkpoint exists

pytestmark = [pytest.mark.browser, pytest.mark.kernels]


def _require_browser():
    if not os.path.exists(CHROMIUM):
        msg = f"{CHROMIUM} is missing (apt-get install -y chromium)"
        if os.environ.get("CI"):
            pytest.fail(f"CI is set but {msg}")
        pytest.skip(msg)
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        if os.environ.get("CI"):
            pytest.fail("CI is set but the playwright package is not installed")
        pytest.skip("the playwright package is not installed")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_lab(
    workdir: Path, log_path: Path, extra_args: tuple[str, ...] = ()
) -> tuple[subprocess.Popen, int, str]:
    """Start JupyterLab serving ``workdir``; returns (process, port, token) once it answers."""
    port, token = _free_port(), secrets.token_hex(16)
    env = dict(
        os.environ,
        COREMTL_PROFILE="ci",
        JUPYTER_CONFIG_DIR=str(workdir / ".jupyter-config"),
        JUPYTER_RUNTIME_DIR=str(workdir / ".jupyter-runtime"),
        JUPYTERLAB_WORKSPACES_DIR=str(workdir / ".ws"),
    )
    cmd = [
        sys.executable,
        "-m",
        "jupyterlab",
        "--no-browser",
        "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.port={port}",
        "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={workdir}",
        f"--LabApp.workspaces_dir={workdir / '.ws'}",
        "--LabApp.news_url=",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        "--LabApp.extension_manager=readonly",
        *extra_args,
    ]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--allow-root")
    log = open(log_path, "w")
    proc = subprocess.Popen(cmd, cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.time() + 90
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"JupyterLab exited with {proc.returncode}; see {log_path}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status?token={token}", timeout=2) as r:
                json.load(r)
                return proc, port, token
        except OSError:
            time.sleep(0.5)
    stop_lab(proc)
    raise RuntimeError(f"JupyterLab did not answer on port {port} within 90 s; see {log_path}")


def stop_lab(proc: subprocess.Popen) -> None:
    """Stop the server by its PID: SIGTERM (it shuts its kernels down), then SIGKILL if needed."""
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def _shot(locator) -> bytes:
    locator.scroll_into_view_if_needed()
    return locator.screenshot(animations="disabled")


def _wait_for_change(locator, before: bytes, timeout_s: float = 60.0) -> bytes:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        now = _shot(locator)
        if now != before:
            return now
        time.sleep(0.5)
    raise AssertionError("the decoded counterfactual image did not change")


def _status_bar(page) -> str:
    return " | ".join(t.replace("\n", " ") for t in page.locator(".jp-StatusBar-Widget").all_inner_texts())


def _fail_with_page(page, artifacts: Path, why: str):
    """Save a full-page screenshot and fail with the status bar's text (what the kernel was doing)."""
    shot = artifacts / "failure_page.png"
    page.screenshot(path=str(shot), full_page=True)
    pytest.fail(f"{why}; status bar: {_status_bar(page)!r}; screenshot: {shot}")


def wait_for_idle_kernel(page, artifacts: Path, timeout_s: float = 120.0) -> None:
    """Wait until the status bar reports the notebook's kernel as idle (started and connected)."""
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if page.locator(".jp-Dialog").count() == 0 and "| Idle" in _status_bar(page):
            return
        time.sleep(0.5)
    _fail_with_page(page, artifacts, f"the kernel was not idle within {timeout_s:.0f} s")


def _execution_started(page) -> bool:
    """True once a cell is queued or running ("[*]"), the kernel is busy, or the widget is already up."""
    return (
        "| Busy" in _status_bar(page)
        or page.locator("img.coremtl-decoded").count() > 0
        or any("*" in p for p in page.locator(".jp-InputPrompt").all_inner_texts())
    )


def run_all_cells(page, artifacts: Path, attempts: int = 3) -> None:
    """Run > Run All Cells, then check that execution really started (a click made while JupyterLab is
    still settling can be lost); retries the menu a few times before failing."""
    for _ in range(attempts):
        page.locator('.lm-MenuBar-itemLabel:text-is("Run")').click()
        item = page.locator('.lm-Menu-itemLabel:text-is("Run All Cells")')
        item.wait_for(state="visible", timeout=10_000)
        item.click()
        deadline = time.time() + 20
        while time.time() < deadline:
            if _execution_started(page):
                return
            time.sleep(0.25)
        page.keyboard.press("Escape")
    _fail_with_page(page, artifacts, f"Run All Cells did not start execution after {attempts} tries")


def drive_widget(notebook: Path, artifacts: Path, workdir: Path) -> dict:
    """Run ``notebook`` in JupyterLab + Chromium and exercise the residual-swap widget; returns evidence."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    from playwright.sync_api import sync_playwright

    artifacts.mkdir(parents=True, exist_ok=True)
    shutil.copy(notebook, workdir / notebook.name)
    proc, port, token = start_lab(workdir, artifacts / "jupyterlab.log")
    evidence: dict = {}
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
            try:
                page = browser.new_page(viewport={"width": 1500, "height": 1000})
                page.goto(f"http://127.0.0.1:{port}/lab/tree/{notebook.name}?token={token}")
                page.wait_for_selector(".jp-Notebook", timeout=90_000)
                page.wait_for_selector(".jp-Notebook-cell", timeout=60_000)
                wait_for_idle_kernel(page, artifacts)
                run_all_cells(page, artifacts)
                decoded = page.locator("img.coremtl-decoded").first
                try:
                    decoded.wait_for(state="attached", timeout=RUN_TIMEOUT_S * 1000)
                except PlaywrightTimeout:
                    _fail_with_page(
                        page, artifacts, f"no decoded image within {RUN_TIMEOUT_S} s of Run All Cells"
                    )
                decoded.scroll_into_view_if_needed()
                decoded.wait_for(state="visible", timeout=30_000)
                widget = page.locator(".coremtl-swap").first
                time.sleep(1)
                widget.screenshot(path=str(artifacts / "01_widget_initial.png"))
                before = _shot(decoded)
                status_before = page.locator(".coremtl-status").first.inner_text()

                # move the slider: drag the noUiSlider handle to the right end of its track
                track = page.locator(".coremtl-alpha .noUi-target, .coremtl-alpha .slider").first
                handle = page.locator(".coremtl-alpha .noUi-handle").first
                box, hbox = track.bounding_box(), handle.bounding_box()
                page.mouse.move(hbox["x"] + hbox["width"] / 2, hbox["y"] + hbox["height"] / 2)
                page.mouse.down()
                page.mouse.move(box["x"] + box["width"] - 1, hbox["y"] + hbox["height"] / 2, steps=10)
                page.mouse.up()
                after_slider = _wait_for_change(decoded, before)
                widget.screenshot(path=str(artifacts / "02_widget_slider_moved.png"))
                evidence["status_after_slider"] = page.locator(".coremtl-status").first.inner_text()

                # change the donor: pick another option of its <select>
                select = page.locator(".coremtl-donor select").first
                options = select.locator("option").all_inner_texts()
                current = select.evaluate("s => s.options[s.selectedIndex].text")
                choice = next(o for o in options if o != current and o != options[0])
                select.select_option(label=choice)
                after_donor = _wait_for_change(decoded, after_slider)
                widget.screenshot(path=str(artifacts / "03_widget_donor_changed.png"))
                page.screenshot(path=str(artifacts / "04_page.png"), full_page=False)
                evidence.update(
                    status_before=status_before,
                    donor=choice,
                    status_after_donor=page.locator(".coremtl-status").first.inner_text(),
                    changed_slider=after_slider != before,
                    changed_donor=after_donor != after_slider,
                )
                errors = page.locator(
                    ".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']"
                )
                evidence["error_outputs"] = [t for t in errors.all_inner_texts() if "Traceback" in t]
            finally:
                browser.close()
    finally:
        stop_lab(proc)
    return evidence


@pytest.mark.timeout(900)
def test_residual_swap_widget_in_a_real_browser(tmp_path):
    _require_browser()
    if not NOTEBOOK.exists():
        pytest.fail(f"{NOTEBOOK} is missing")
    ev = drive_widget(NOTEBOOK, ARTIFACTS, tmp_path)
    assert ev["changed_slider"] and ev["changed_donor"]
    assert ev["status_before"] != ev["status_after_slider"] != ev["status_after_donor"]
    assert "α = 1.00" in ev["status_after_slider"]
    assert not ev["error_outputs"], ev["error_outputs"]
