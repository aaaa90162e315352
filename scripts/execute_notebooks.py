#!/usr/bin/env python
"""Execute tutorial notebooks from today's code and store them the way a reader should see them.

    PYTHONPATH=. python scripts/execute_notebooks.py tutorials/01_scm_theory.ipynb [...] [--profile cpu]
    python scripts/execute_notebooks.py --check tutorials/*.ipynb      # report problems, change nothing

For each notebook, in order:

1. **execute** every cell in a fresh kernel (the notebook's folder as working directory,
   ``COREMTL_PROFILE`` set to ``--profile``, default ``cpu``), with nbclient; the widget state is stored
   in the notebook's metadata so widgets draw when it is opened (trusted) in JupyterLab;
2. **widgets**: a widget that was closed while the cell ran (e.g. a tqdm bar with ``leave=False``) is
   gone from the page when the run ends, so its output is dropped as well -- otherwise the stored
   notebook would show it frozen; the stored state keeps only the models that the remaining outputs
   reach, and each widget output's plain-text fallback (what GitHub shows) is rewritten from the
   final state ("epochs: 6/6 ...") instead of the Python repr of the widget at display time;
3. **PNG fallbacks**: every plotly output gets an ``image/png`` rendering of the same figure beside its
   plotly JSON, rendered offline by kaleido with the system Chromium (``/usr/bin/chromium``, or
   ``$BROWSER_PATH``). JupyterLab still draws the interactive figure; GitHub, nbviewer and the docs
   site, which do not run plotly's renderer, show the PNG;
4. **hygiene**: :func:`hygiene_problems` lists what a reader must not see -- a stderr/warning box, an
   error, a path of this machine, a duplicated figure, a plotly figure without its PNG, a widget
   without stored state. The notebook is written anyway (so you can look at it) but the command exits
   with status 1 and prints the problems: fix them at their source and run it again;
5. **sign** the notebook (as ``jupyter trust``) and write it (nbformat 4.5, cell ids, no timing metadata,
   the kernel's own display name, so that opening it in JupyterLab does not mark it modified).

``tests/test_notebook_hygiene.py`` runs the same :func:`hygiene_problems` on every stored notebook.
"""

from __future__ import annotations

import argparse
import base64
import copy
import json
import os
import re
import sys
import time
from collections.abc import Iterable
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
PLOTLY = "application/vnd.plotly.v1+json"
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
CHROMIUM = "/usr/bin/chromium"
DEFAULT_SIZE = (900, 500)  # PNG size (width, height) when a figure's layout sets none

# ----------------------------------------------------------------------------------------- execute


def execute(nb, workdir: Path, profile: str, timeout: int):
    """Run every cell of ``nb`` in a fresh kernel; return the ids of the widget models closed meanwhile."""
    from nbclient import NotebookClient

    class Client(NotebookClient):
        closed: set[str]

        def handle_comm_msg(self, outs, msg, cell_index):
            if msg["msg_type"] == "comm_close":
                self.closed.add(msg["content"]["comm_id"])
            super().handle_comm_msg(outs, msg, cell_index)

    os.environ["COREMTL_PROFILE"] = profile
    client = Client(
        nb,
        timeout=timeout,
        kernel_name="python3",
        resources={"metadata": {"path": str(workdir)}},
        store_widget_state=True,
        record_timing=False,
        allow_errors=False,
    )
    client.closed = set()
    client.execute()
    return client.closed


# ----------------------------------------------------------------------------------------- widgets
_MODEL_REF = re.compile(r"IPY_MODEL_([0-9a-f]{32})")
_WIDGET_NOTE = "(an interactive widget: open the notebook in JupyterLab)"
_TAGS = re.compile(r"<[^>]+>")


def _widget_state(nb) -> dict:
    return nb.metadata.get("widgets", {}).get(WIDGET_STATE, {}).get("state", {})


def _view_ids(nb) -> list[str]:
    return [
        out["data"][WIDGET_VIEW]["model_id"]
        for cell in nb.cells
        if cell.cell_type == "code"
        for out in cell.get("outputs", [])
        if WIDGET_VIEW in out.get("data", {})
    ]


def widget_text(model_id: str, state: dict, depth: int = 0) -> str:
    """A plain-text picture of a widget's final state (progress bars as ``n/total``, boxes joined)."""
    model = state.get(model_id)
    if model is None or depth > 20:
        return ""
    name, st = model.get("model_name", ""), model.get("state", {})
    if name.endswith("BoxModel"):
        parts = [widget_text(ref[len("IPY_MODEL_") :], state, depth + 1) for ref in st.get("children", [])]
        return ("\n" if name.startswith("V") else " ").join(p for p in parts if p)
    label = _TAGS.sub("", str(st.get("description", ""))).strip()
    if name.endswith("ProgressModel"):
        return f"{label} {st.get('value', 0):g}/{st.get('max', 100):g}".strip()
    if name in ("HTMLModel", "LabelModel", "HTMLMathModel"):
        text = _TAGS.sub("", str(st.get("value", ""))).replace("&nbsp;", " ").strip()
        return f"{label} {text}".strip()
    if name == "ImageModel":
        return "[image]"
    if "value" in st and not isinstance(st["value"], (dict, list)):
        value = st["value"]
        if "_options_labels" in st and isinstance(st.get("index"), int):
            value = st["_options_labels"][st["index"]]
        return f"{label}: {value}" if label else str(value)
    return ""


def tidy_widgets(nb, closed: Iterable[str]) -> None:
    """Drop outputs of closed widgets, keep only the reachable state, rewrite the text fallbacks."""
    closed = set(closed)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = [
                o
                for o in cell.get("outputs", [])
                if o.get("data", {}).get(WIDGET_VIEW, {}).get("model_id") not in closed
            ]
    state = _widget_state(nb)
    keep, todo = set(), [m for m in _view_ids(nb) if m in state]
    while todo:
        mid = todo.pop()
        if mid in keep or mid not in state:
            continue
        keep.add(mid)
        todo.extend(_MODEL_REF.findall(json.dumps(state[mid].get("state", {}))))
    if not keep:
        nb.metadata.pop("widgets", None)
        return
    nb.metadata["widgets"][WIDGET_STATE]["state"] = {m: state[m] for m in state if m in keep}
    for cell in nb.cells:
        for out in cell.get("outputs", []) if cell.cell_type == "code" else []:
            view = out.get("data", {}).get(WIDGET_VIEW)
            if view is not None:
                text = widget_text(view["model_id"], state)
                out["data"]["text/plain"] = text or _WIDGET_NOTE


# ------------------------------------------------------------------------------------ PNG fallback
def _figure_size(fig: dict) -> tuple[int, int]:
    layout = fig.get("layout", {})
    return int(layout.get("width") or DEFAULT_SIZE[0]), int(layout.get("height") or DEFAULT_SIZE[1])


def add_png_fallbacks(nb, only_missing: bool = False) -> int:
    """Render every plotly output of ``nb`` to an ``image/png`` beside it (kaleido + Chromium); return the count."""
    outputs = [
        o
        for c in nb.cells
        if c.cell_type == "code"
        for o in c.get("outputs", [])
        if PLOTLY in o.get("data", {}) and not (only_missing and "image/png" in o["data"])
    ]
    if not outputs:
        return 0
    import kaleido

    if "BROWSER_PATH" not in os.environ and os.path.exists(CHROMIUM):
        os.environ["BROWSER_PATH"] = CHROMIUM  # choreographer (kaleido's browser driver) looks here first
    kaleido.start_sync_server(silence_warnings=True)
    try:
        for out in outputs:
            fig = copy.deepcopy(dict(out["data"][PLOTLY]))
            fig.pop("config", None)
            width, height = _figure_size(fig)
            png = kaleido.calc_fig_sync(fig, opts={"format": "png", "width": width, "height": height})
            out["data"]["image/png"] = base64.b64encode(png).decode("ascii")
            out.setdefault("metadata", {})["image/png"] = {"width": width, "height": height}
    finally:
        kaleido.stop_sync_server(silence_warnings=True)
    return len(outputs)


# ------------------------------------------------------------------------------------------ hygiene
def machine_paths() -> list[str]:
    """Absolute paths that identify this machine: the repository, the Python prefix, home, temp folders."""
    paths = {
        str(ROOT),
        sys.prefix,
        sys.base_prefix,
        os.path.expanduser("~"),
        "/tmp/",
        "/var/folders/",
        "/home/",
        "/Users/",
        "/work/",
        "site-packages",
        "dist-packages",
        "C:\\Users\\",
    }
    return sorted(p for p in paths if p and p not in ("/", "~"))


_WARNING = re.compile(r"\b\w*(Warning|Error):|Traceback \(most recent call last\)")


def _output_text(out) -> str:
    if out.get("output_type") == "stream":
        return out.get("text", "")
    if out.get("output_type") == "error":
        return "\n".join(out.get("traceback", []))
    parts = []
    for mime, value in out.get("data", {}).items():
        if mime.startswith("text/") or mime.endswith("json"):
            parts.append(value if isinstance(value, str) else json.dumps(value))
    return "\n".join(parts)


def hygiene_problems(nb) -> list[str]:
    """What a reader must not see in the stored outputs of ``nb``, one line per problem ([] when clean)."""
    problems: list[str] = []
    state = _widget_state(nb)
    paths = machine_paths()
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        where = f"cell {i}"
        titles: dict[str, int] = {}
        for out in cell.get("outputs", []):
            kind = out.get("output_type")
            if kind == "error":
                problems.append(f"{where}: an error output ({out.get('ename')})")
            if kind == "stream" and out.get("name") == "stderr":
                problems.append(f"{where}: a stderr box: {out.get('text', '')[:120]!r}")
            text = _output_text(out)
            if kind == "stream" or "text/plain" in out.get("data", {}):
                plain = text if kind == "stream" else out["data"]["text/plain"]
                m = _WARNING.search(plain if isinstance(plain, str) else "".join(plain))
                if m and kind != "error":
                    problems.append(f"{where}: a warning or error message in the output: {m.group(0)!r}")
            for p in paths:
                if p in text:
                    problems.append(f"{where}: an output holds the machine path {p!r}")
            data = out.get("data", {})
            if PLOTLY in data:
                if "image/png" not in data:
                    problems.append(f"{where}: a plotly figure without its image/png fallback")
                fig = data[PLOTLY]
                title = fig.get("layout", {}).get("title", "")
                title = title.get("text", "") if isinstance(title, dict) else str(title)
                key = title or json.dumps(fig.get("data", []), sort_keys=True)[:2000]
                titles[key] = titles.get(key, 0) + 1
            view = data.get(WIDGET_VIEW)
            if view is not None and view.get("model_id") not in state:
                problems.append(f"{where}: a widget output without stored widget state (shows as text)")
            elif view is not None:
                plain = data.get("text/plain", "")
                plain = plain if isinstance(plain, str) else "".join(plain)
                if plain not in (widget_text(view["model_id"], state), _WIDGET_NOTE):
                    problems.append(
                        f"{where}: a widget's text fallback is stale (e.g. a progress bar frozen at "
                        f"its first value): {plain[:60]!r}"
                    )
        problems.extend(f"{where}: {n} copies of the figure {t[:60]!r}" for t, n in titles.items() if n > 1)
    counts: dict[str, int] = {}
    for p in problems:
        counts[p] = counts.get(p, 0) + 1
    return [p if n == 1 else f"{p} (x{n})" for p, n in counts.items()]


def is_signed(nb) -> bool:
    from nbformat.sign import NotebookNotary

    return NotebookNotary().check_signature(nb)


def finish(nb) -> None:
    """Normalise (nbformat 4.5 with cell ids, no per-cell execution metadata) and sign ``nb``."""
    from nbformat.sign import NotebookNotary

    nb.nbformat, nb.nbformat_minor = 4, max(5, nb.get("nbformat_minor", 5))
    from jupyter_client.kernelspec import KernelSpecManager

    # the kernel's own name as JupyterLab shows it: a different stored display name makes JupyterLab
    # rewrite the metadata when the kernel connects, which marks the notebook modified on opening
    spec = KernelSpecManager().get_kernel_spec("python3")
    nb.metadata["kernelspec"] = {
        "display_name": spec.display_name,
        "language": spec.language,
        "name": "python3",
    }
    for cell in nb.cells:
        cell.get("metadata", {}).pop("execution", None)
    nbformat.validator.normalize(nb)
    nbformat.validate(nb)
    NotebookNotary().sign(nb)


# --------------------------------------------------------------------------------------------- main
def process(path: Path, profile: str, timeout: int) -> list[str]:
    nb = nbformat.read(path, as_version=4)
    start = time.perf_counter()
    closed = execute(nb, path.parent.resolve(), profile, timeout)
    executed = time.perf_counter()
    tidy_widgets(nb, closed)
    n_png = add_png_fallbacks(nb)
    problems = hygiene_problems(nb)
    finish(nb)
    nbformat.write(nb, path)
    print(  # the execution is what a reader waits for in JupyterLab; the PNG fallbacks are this script's
        f"{path}: executed in {executed - start:.0f} s ({profile} profile), "
        f"{n_png} PNG fallbacks in {time.perf_counter() - executed:.0f} s, {len(problems)} problems, signed"
    )
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("notebooks", nargs="+", type=Path)
    parser.add_argument("--profile", default="cpu", help="COREMTL_PROFILE for the kernel (default: cpu)")
    parser.add_argument("--timeout", type=int, default=3600, help="seconds one cell may run (default: 3600)")
    parser.add_argument("--check", action="store_true", help="only report hygiene problems; change nothing")
    parser.add_argument(
        "--no-execute",
        action="store_true",
        help="keep the stored outputs; only add missing PNG fallbacks, normalise and sign",
    )
    args = parser.parse_args(argv)
    failed = False
    for path in args.notebooks:
        if not path.is_file():
            parser.error(f"{path}: no such notebook")
        if args.check:
            problems = hygiene_problems(nbformat.read(path, as_version=4))
        elif args.no_execute:
            nb = nbformat.read(path, as_version=4)
            add_png_fallbacks(nb, only_missing=True)
            problems = hygiene_problems(nb)
            finish(nb)
            nbformat.write(nb, path)
            print(f"{path}: normalised and signed (not executed), {len(problems)} problems")
        else:
            problems = process(path, args.profile, args.timeout)
        for p in problems:
            print(f"  {path}: {p}")
        failed |= bool(problems)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
