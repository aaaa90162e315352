"""Plotly figures of training runs and the self-contained HTML report of ``coremtl-lite demo``.

* :func:`curves_figure` -- training curves of one or more runs (total loss per step, task losses,
  the objective's extra terms such as CKA and reconstruction, the validation score);
* :class:`LiveCurves` -- a trainer callback that redraws a figure while training: a ``go.FigureWidget``
  in place, or a plain ``go.Figure`` re-displayed through an IPython display handle (no widget
  library needed); the drawing itself is :func:`update_curves`, a plain function that tests can call;
* :func:`id_ood_rows` / :func:`id_ood_table` / :func:`id_ood_figure` -- the ID/OOD table: each run's
  source and target metrics and the source->target gap;
* :func:`html_table` / :func:`rows_html` -- tables as HTML (as tall as their rows), styled by
  :data:`REPORT_CSS`;
* :func:`write_report` / :func:`html_page` -- one HTML file with plotly.js embedded once (readable offline).
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from coremtl_lite.experiments.tables import format_table
from coremtl_lite.train.checkpoint import atomic_write
from coremtl_lite.train.history import History

#: the columns of the demo table: (task, metric, label, higher is better)
DEMO_METRICS: tuple[tuple[str, str, str, bool], ...] = (
    ("segmentation", "mIoU", "seg mIoU", True),
    ("depth", "abs_err", "depth abs err", False),
    ("normal", "mean", "normal mean angle (deg)", False),
)

_COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf")
_DASHES = ("solid", "dash", "dot", "dashdot", "longdash")


def smooth(values: Sequence[float], window: int) -> list[float]:
    """Trailing moving average over ``window`` values (the first points average what exists)."""
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    out, acc = [], 0.0
    for i, v in enumerate(values):
        acc += v
        if i >= window:
            acc -= values[i - window]
        out.append(acc / min(i + 1, window))
    return out


def curve_keys(history: History) -> dict[str, list[str]]:
    """What :func:`curves_figure` plots from a history: task losses, extra-term logs (``obj/*``), ``score``."""
    keys = history.step_keys()
    return {
        "tasks": [k for k in keys if k.startswith("loss/") and k not in ("loss/total", "loss/extra")],
        "extra": [k for k in keys if k.startswith("obj/")],
    }


def curves_figure(
    histories: Mapping[str, History] | History, smooth_window: int = 5, title: str = "Training curves"
) -> go.Figure:
    """Four panels per figure: total loss per step, task losses per step, the objective's extra terms
    (e.g. ``obj/cka`` -- linear CKA(z_s, z_p), Eq. 11 -- and ``obj/rec``, the reconstruction loss) and
    the validation score per epoch (Δm% against the first validation pass).

    One colour per quantity (a task loss or a term, the same in every run) and one line style per
    run; the legend lists the quantities under one heading per run, and a click on a run's heading
    hides or shows that run."""
    if isinstance(histories, History):
        histories = {"run": histories}
    fig = make_subplots(
        rows=2,
        cols=2,
        subplot_titles=(
            "total loss (per step)",
            "task losses (per step)",
            "extra terms: CKA, reconstruction, ...",
            "validation score: Δm% vs epoch 1",
        ),
    )
    colours: dict[str, str] = {}

    def colour(key: str) -> str:
        return colours.setdefault(key, _COLORS[len(colours) % len(_COLORS)])

    for r, (name, hist) in enumerate(histories.items()):
        dash = _DASHES[r % len(_DASHES)]

        def line(key: str, label: str, x, y, row: int, col: int, name=name, dash=dash, **kw) -> None:
            fig.add_trace(
                go.Scatter(
                    x=x,
                    y=y,
                    name=label,
                    legendgroup=name,
                    legendgrouptitle_text=name,
                    line=dict(color=colour(key), dash=dash),
                    **kw,
                ),
                row=row,
                col=col,
            )

        x, y = hist.step_series("loss/total")
        line("total", "total", x, smooth(y, smooth_window) if y else y, 1, 1)
        keys = curve_keys(hist)
        for key in keys["tasks"]:
            x, y = hist.step_series(key)
            line(key, key[5:], x, smooth(y, smooth_window) if y else y, 1, 2)
        for key in keys["extra"]:
            x, y = hist.step_series(key)
            line(key, key[4:], x, smooth(y, smooth_window) if y else y, 2, 1)
        x, y = hist.epoch_series("score")
        line("score", "val score", x, y, 2, 2, mode="lines+markers")
    fig.update_xaxes(title_text="step", row=1, col=1)
    fig.update_xaxes(title_text="step", row=1, col=2)
    fig.update_xaxes(title_text="step", row=2, col=1)
    fig.update_xaxes(title_text="epoch", row=2, col=2)
    fig.update_yaxes(type="log", row=1, col=1)
    fig.update_layout(title=title, height=650, legend=dict(groupclick="togglegroup", tracegroupgap=12))
    return fig


def update_curves(fig: go.Figure, history: History, keys: Sequence[str], smooth_window: int = 1) -> None:
    """Set trace ``i`` of ``fig`` to the per-step series ``keys[i]`` of ``history`` (missing keys: empty)."""
    if len(fig.data) < len(keys):
        raise ValueError(f"figure has {len(fig.data)} traces for {len(keys)} keys")
    with fig.batch_update():
        for trace, key in zip(fig.data, keys):
            x, y = history.step_series(key)
            trace.x, trace.y = x, (smooth(y, smooth_window) if y else y)


class LiveCurves:
    """Trainer callback: redraw per-step curves every ``every`` steps and at each epoch end, in place.

    In a notebook call :meth:`show` once before training: it displays the figure with a display id,
    and every redraw replaces that one output (so a stored notebook holds one figure, the final one).
    A plotly ``go.Figure`` displays itself through its own ``_ipython_display_``, which drops the
    display id -- ``display(fig, display_id=True)`` followed by updates appends a new copy of the figure
    each time -- so :meth:`show` and the updates send the figure's plotly mime bundle
    (:meth:`_repr_mimebundle_`) instead. ``fig`` may also be a ``go.FigureWidget``, which updates
    itself in place (needs ``anywidget``). ``handle`` is an existing display handle to update.

    Traces are created lazily, one per key in ``keys`` (default: every ``loss/*`` and ``obj/*`` key of
    the first step); ``fig.data`` afterwards has one trace per key, named after the key.
    """

    def __init__(
        self,
        fig: go.Figure | None = None,
        keys: Sequence[str] | None = None,
        every: int = 5,
        smooth_window: int = 5,
        handle: Any = None,
    ):
        if every < 1:
            raise ValueError(f"every must be >= 1, got {every}")
        self.fig = go.Figure() if fig is None else fig
        self.keys, self.every, self.smooth_window = list(keys) if keys else None, every, smooth_window
        self.handle = handle

    def _repr_mimebundle_(self, include=None, exclude=None) -> dict[str, Any]:
        """The figure as plotly's notebook mime bundle, plus a one-line text form."""
        import plotly.io as pio

        bundle = pio.renderers["plotly_mimetype"].to_mimebundle(self.fig.to_dict())
        bundle["text/plain"] = f"LiveCurves: {len(self.fig.data)} curves"
        return bundle

    def show(self) -> LiveCurves:
        """Display the figure in the current notebook cell (once); later redraws update it in place."""
        from IPython.display import display

        if not isinstance(self.fig, go.FigureWidget):
            self.handle = display(self, display_id=True)
        else:
            display(self.fig)
        return self

    def _ensure_traces(self, history: History) -> None:
        if self.keys is None:
            self.keys = [
                k for k in history.step_keys() if k.startswith(("loss/", "obj/")) and k != "loss/extra"
            ]
        if len(self.fig.data) < len(self.keys):
            for key in self.keys[len(self.fig.data) :]:
                self.fig.add_trace(go.Scatter(x=[], y=[], name=key, mode="lines"))

    def draw(self, history: History) -> None:
        """Redraw from ``history`` now."""
        if not history.steps:
            return
        self._ensure_traces(history)
        update_curves(self.fig, history, self.keys or [], self.smooth_window)
        if self.handle is not None:
            self.handle.update(self)

    def on_step_end(self, trainer, record) -> None:
        if (int(record.get("step", 0)) + 1) % self.every == 0:
            self.draw(trainer.history)

    def on_epoch_end(self, trainer, history) -> None:
        self.draw(history)


# ------------------------------------------------------------------------------------ ID / OOD
def id_ood_rows(
    results: Mapping[str, Mapping[str, Any]],
    source: str = "source",
    target: str = "target",
    metrics: Sequence[tuple[str, str, str, bool]] = DEMO_METRICS,
) -> list[dict[str, Any]]:
    """One row per run: ``{"run", "<label> (source)", "<label> (target)", "<label> gap"}``.

    ``results[run]`` is ``{domain: {task: {metric: value}}}``; the gap is target - source in the
    metric's units (worse on the target: negative for mIoU, positive for errors). Metrics a run lacks are NaN.
    """
    rows = []
    for run, res in results.items():
        row: dict[str, Any] = {"run": run}
        for task, metric, label, _ in metrics:
            s = res.get(source, {}).get(task, {}).get(metric, math.nan)
            t = res.get(target, {}).get(task, {}).get(metric, math.nan)
            row[f"{label} ({source})"], row[f"{label} ({target})"], row[f"{label} gap"] = s, t, t - s
        rows.append(row)
    return rows


def id_ood_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """A text table of :func:`id_ood_rows` for the terminal (:func:`coremtl_lite.experiments.format_table`),
    one line per (metric, run), under 100 columns.

    Columns: metric, run, source value, target value, gap (target - source).
    """
    if not rows:
        return "(no runs)"
    metrics = [c[: -len(" gap")] for c in rows[0] if c.endswith(" gap")]
    domains = [c[len(metrics[0]) + 2 : -1] for c in rows[0] if metrics and c.startswith(metrics[0] + " (")]
    header = ["metric", "run", *domains, "gap"]
    body = [
        [
            label if i == 0 else "",
            str(r["run"]),
            *(_fmt(r[f"{label} ({d})"]) for d in domains),
            _fmt(r[f"{label} gap"]),
        ]
        for label in metrics
        for i, r in enumerate(rows)
    ]
    return format_table(header, body, left=2)


def html_table(header: Sequence[str], body: Sequence[Sequence[Any]], caption: str | None = None) -> str:
    """An HTML table (``class="coremtl-table"``, styled by :data:`REPORT_CSS`); numbers are right-aligned.

    Its height is that of its rows (a plotly table has a fixed height and clips or pads them).
    """

    def cell(tag: str, v: Any) -> str:
        text = _fmt(v) if isinstance(v, float) else str(v)
        num = isinstance(v, (int, float)) or text.lstrip("+-").replace(".", "", 1)[:1].isdigit()
        return f"<{tag}{' class=num' if num and tag == 'td' else ''}>{html.escape(text)}</{tag}>"

    parts = ["<table class='coremtl-table'>"]
    if caption:
        parts.append(f"<caption>{html.escape(caption)}</caption>")
    parts.append("<thead><tr>" + "".join(cell("th", h) for h in header) + "</tr></thead><tbody>")
    parts += ["<tr>" + "".join(cell("td", v) for v in row) + "</tr>" for row in body]
    parts.append("</tbody></table>")
    return "".join(parts)


def rows_html(rows: Sequence[Mapping[str, Any]], caption: str | None = None) -> str:
    """:func:`html_table` of a list of dicts (the keys of the first row are the columns)."""
    cols = list(rows[0]) if rows else []
    return html_table(cols, [[r[c] for c in cols] for r in rows], caption)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:+.4f}" if abs(v) < 1 else f"{v:.3f}"
    return str(v)


def table_figure(rows: Sequence[Mapping[str, Any]], title: str = "") -> go.Figure:
    """The rows as a plotly table."""
    cols = list(rows[0]) if rows else []
    cells = [[_fmt(r[c]) for r in rows] for c in cols]
    fig = go.Figure(go.Table(header=dict(values=cols, align="left"), cells=dict(values=cells, align="left")))
    fig.update_layout(title=title, height=120 + 40 * len(rows))
    return fig


def id_ood_figure(
    results: Mapping[str, Mapping[str, Any]],
    source: str = "source",
    target: str = "target",
    metrics: Sequence[tuple[str, str, str, bool]] = DEMO_METRICS,
) -> go.Figure:
    """Grouped bars: per metric, every run on the source and the target test sets."""
    fig = make_subplots(
        rows=1,
        cols=len(metrics),
        subplot_titles=[f"{label} ({'higher' if hi else 'lower'} is better)" for _, _, label, hi in metrics],
    )
    for r, (run, res) in enumerate(results.items()):
        color = _COLORS[r % len(_COLORS)]
        for c, (task, metric, _, _) in enumerate(metrics):
            vals = [res.get(d, {}).get(task, {}).get(metric, math.nan) for d in (source, target)]
            fig.add_trace(
                go.Bar(
                    x=[source, target],
                    y=vals,
                    name=run,
                    marker_color=color,
                    legendgroup=run,
                    showlegend=c == 0,
                ),
                row=1,
                col=c + 1,
            )
    fig.update_layout(
        barmode="group", title=f"In-distribution ({source}) vs shifted ({target}) test sets", height=420
    )
    return fig


# ------------------------------------------------------------------------------------------ HTML
#: the style of every HTML report of the package (demo and benchmark): readable type, tables that
#: scroll sideways on a narrow screen instead of wrapping mid-column
REPORT_CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,Helvetica,Arial,sans-serif;color:#222;
     max-width:1200px;margin:auto;padding:1em 2em;line-height:1.5}
h1{font-size:1.7em;border-bottom:2px solid #1f77b4;padding-bottom:.2em}
h2{font-size:1.3em;margin-top:1.8em;border-bottom:1px solid #ddd}
h3{font-size:1.05em;margin-top:1.2em}
pre{background:#f6f8fa;padding:.8em 1em;white-space:pre-wrap;border-radius:4px;font-size:.9em}
.table-wrap{overflow-x:auto;margin:.6em 0 1.2em}
table.coremtl-table{border-collapse:collapse;font-size:.92em;white-space:nowrap}
table.coremtl-table caption{caption-side:top;text-align:left;font-weight:600;padding:.3em 0}
table.coremtl-table th,table.coremtl-table td{padding:.3em .8em;border-bottom:1px solid #e3e3e3;text-align:left}
table.coremtl-table thead th{border-bottom:2px solid #999;background:#fafafa}
table.coremtl-table td.num{text-align:right;font-variant-numeric:tabular-nums}
table.coremtl-table tbody tr:hover{background:#f2f7fc}
.plotly-graph-div{margin:.5em 0 1.5em}
"""


def html_page(title: str, body: Sequence[str], figures: Sequence[go.Figure | str] = ()) -> str:
    """A complete HTML page: ``title``, :data:`REPORT_CSS`, plotly.js once in the head, then ``body``."""
    import plotly.offline

    script = plotly.offline.get_plotlyjs()
    return (
        "<!doctype html>\n<html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>{html.escape(title)}</title><style>{REPORT_CSS}</style>"
        f"<script type='text/javascript'>{script}</script></head><body>\n"
        f"<h1>{html.escape(title)}</h1>\n" + "\n".join(body) + "\n</body></html>\n"
    )


def figure_html(fig: go.Figure) -> str:
    """A plotly figure as a ``<div>`` for :func:`html_page` (which loads plotly.js once)."""
    return fig.to_html(full_html=False, include_plotlyjs=False, config={"displaylogo": False})


def write_report(path: str | Path, title: str, sections: Sequence[tuple[str, Any]]) -> Path:
    """Write one self-contained HTML file: a heading and, per section, a figure or an HTML/text string.

    plotly.js is embedded once (in the page head), so the file opens offline; tables given as HTML
    (:func:`html_table`) are as tall as their rows.
    """
    body = []
    for heading, content in sections:
        if heading:
            body.append(f"<h2>{html.escape(heading)}</h2>")
        if isinstance(content, go.Figure):
            body.append(figure_html(content))
        elif isinstance(content, str):
            if content.lstrip().startswith("<table"):
                body.append(f"<div class='table-wrap'>{content}</div>")
            else:
                body.append(
                    content if content.lstrip().startswith("<") else f"<pre>{html.escape(content)}</pre>"
                )
        else:
            raise TypeError(
                f"section {heading!r}: expected a plotly Figure or a string, got {type(content).__name__}"
            )
    text = html_page(title, body)
    return atomic_write(path, lambda fh: fh.write(text.encode("utf-8")))
