"""The benchmark's tables and plotly HTML report, from the summary rows of :mod:`coremtl_lite.bench.runner`.

:func:`pivot` lays the rows out as a variant x metric grid of ``mean ± std`` cells; print it with
:func:`coremtl_lite.experiments.format_table` (markdown) or embed it with :func:`write_html`.

The out-of-distribution suites are laid out differently (:mod:`coremtl_lite.bench.ood`): ``ood-severity``
as its factor table and its curves against the shift severity (plus Theorem 2.4's scatter when its
numbers are given), ``ood-rho`` as its target table and its curves against the training rho.
"""

from __future__ import annotations

import html
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from coremtl_lite.experiments.aggregate import format_mean_std

#: the headline metric of each task (direction: True when higher is better)
HEADLINE = {
    "segmentation": ("mIoU", True),
    "depth": ("abs_err", False),
    "normal": ("mean", False),
    "attributes": ("acc", True),
    "all": ("delta_m%", True),
}
#: summary metrics over all tasks, shown when present
SUMMARY = ("avg_acc", "delta_m%", "seconds/epoch")


def pivot(
    rows: Sequence[dict[str, Any]], domain: str, metrics: Sequence[tuple[str, str]] | None = None
) -> tuple[list[str], list[list[str]]]:
    """A variant x (task, metric) table of ``mean ± std`` strings for one domain."""
    rows = [r for r in rows if r["domain"] in (domain, "-")]
    if metrics is None:
        metrics = sorted({(r["task"], r["metric"]) for r in rows})
    variants = list(dict.fromkeys(r["variant"] for r in rows))
    cell = {(r["variant"], r["task"], r["metric"]): r for r in rows}
    header = ["variant"] + [f"{t} {m}" if t != "all" else m for t, m in metrics]
    body = []
    for v in variants:
        line = [v]
        for t, m in metrics:
            r = cell.get((v, t, m))
            line.append("–" if r is None else format_mean_std(r["mean"], r["std"], r["n"]))
        body.append(line)
    return header, body


def headline_metrics(rows: Sequence[dict[str, Any]]) -> list[tuple[str, str]]:
    """The (task, metric) pairs of :data:`HEADLINE` present in ``rows``, plus time if timed."""
    present = {(r["task"], r["metric"]) for r in rows}
    out = [(t, m) for t, (m, _) in HEADLINE.items() if t != "all" and (t, m) in present]
    return out + [("all", m) for m in SUMMARY if ("all", m) in present]


def figure(rows: Sequence[dict[str, Any]], suite: str):
    """A plotly bar chart per headline metric, variants on the x axis, one bar group per domain."""
    from plotly.subplots import make_subplots

    rows = [r for r in rows if r["suite"] == suite]
    metrics = headline_metrics(rows)
    fig = make_subplots(
        rows=1,
        cols=max(1, len(metrics)),
        subplot_titles=[f"{t} {m}" if t != "all" else m for t, m in metrics],
    )
    domains = list(dict.fromkeys(r["domain"] for r in rows))
    for col, (task, metric) in enumerate(metrics, start=1):
        for k, domain in enumerate(domains):
            sel = [r for r in rows if r["task"] == task and r["metric"] == metric and r["domain"] == domain]
            if not sel:
                continue
            fig.add_bar(
                x=[r["variant"] for r in sel],
                y=[r["mean"] for r in sel],
                error_y=dict(type="data", array=[r["std"] for r in sel]),
                name=domain,
                legendgroup=domain,
                showlegend=col == 1,
                marker_color=_COLOURS[k % len(_COLOURS)],
                row=1,
                col=col,
            )
    fig.update_layout(title=f"suite {suite}", barmode="group", height=420)
    return fig


_COLOURS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"]


def ood_sections(
    rows: Sequence[dict[str, Any]], suite: str, study: dict[str, Any] | None = None
) -> list[str]:
    """The HTML blocks of an out-of-distribution suite (module docstring); ``study`` is
    :func:`coremtl_lite.bench.ood.ood_study` of its probed runs."""
    from coremtl_lite.bench.ood import (
        OOD_METRICS,
        factor_table,
        rho_curves,
        severity_curves,
        theorem24_figures,
    )
    from coremtl_lite.report import figure_html, html_table
    from coremtl_lite.viz import band_curves

    sel = [r for r in rows if r["suite"] == suite]
    present = {(r["task"], r["metric"]) for r in sel}
    metrics = [(t, m) for t, (m, _) in OOD_METRICS.items() if (t, m) in present]
    out = []
    if suite == "ood-severity":
        for task, metric in metrics:
            header, table = factor_table(sel, task, metric, suite)
            caption = f"which factor breaks which model: {task} {metric} (change from the source)"
            out.append(f"<div class='table-wrap'>{html_table(header, table, caption=caption)}</div>")
        for task, metric in metrics:
            fig = band_curves(
                severity_curves(sel, task, metric, suite),
                f"{task} {metric} against the shift severity",
                "severity s of shift:s",
                f"{task} {metric}",
            )
            out.append(figure_html(fig))
        if study:
            out += [figure_html(fig) for fig in theorem24_figures(study["theorem24"])]
            rob = study["robustness"]
            caption = "robustness ratio (normalised Δz_p / Δz_s); compare core_mtl with ds, the same model without its losses"
            out.append(
                f"<div class='table-wrap'>{html_table(rob['header'], rob['rows'], caption=caption)}</div>"
            )
    else:
        header, table = pivot(sel, "target", headline_metrics(sel))
        out.append(f"<div class='table-wrap'>{html_table(header, table, caption='target test set')}</div>")
        for task, metric in metrics:
            fig = band_curves(
                rho_curves(sel, task, metric, suite),
                f"target {task} {metric} against the training rho",
                "training rho",
                f"{task} {metric}",
            )
            out.append(figure_html(fig))
    return out


def completeness(meta: dict[str, Any], show: int = 8) -> str | None:
    """One plain sentence when the results are incomplete ("12 of 24 runs finished; missing: ..."),
    naming the first ``show`` missing runs; None when every planned run is in them (or the metadata
    predates the check)."""
    missing = meta.get("missing_runs") or []
    if meta.get("complete", True) and not missing:
        return None
    planned = meta.get("runs_planned", len(missing))
    names = [
        f"{m['suite']}/{m['variant']} seed {m['seed']}" + (f" ({m['task']})" if m.get("task") else "")
        for m in missing
    ]
    more = f" and {len(names) - show} more" if len(names) > show else ""
    return (
        f"incomplete results: {planned - len(missing)} of {planned} runs finished; "
        f"missing: {', '.join(names[:show])}{more}"
    )


#: the suites drawn by :func:`ood_sections`
OOD_SUITES = ("ood-severity", "ood-rho")


def write_html(
    rows: Sequence[dict[str, Any]],
    meta: dict[str, Any],
    path: str | os.PathLike,
    study: dict[str, Any] | None = None,
) -> Path:
    """One self-contained HTML page: metadata, per suite a table per domain and a figure (the
    out-of-distribution suites: :func:`ood_sections`, with the study's numbers ``study``). Incomplete
    results (:func:`completeness`) are said first, with every missing run.

    plotly.js is embedded once in the page head (no CDN: the page works offline); the tables are HTML,
    as tall as their rows, styled like the demo report (:data:`coremtl_lite.report.REPORT_CSS`).
    """
    from coremtl_lite.report import figure_html, html_page, html_table

    path = Path(path)
    shown = {k: v for k, v in meta.items() if k != "missing_runs"}  # the missing runs: the note below
    lines = "\n".join(f"{k}: {v}" for k, v in shown.items())
    body = ["<h2>Run metadata</h2><pre>" + html.escape(lines) + "</pre>"]
    note = completeness(meta, show=len(meta.get("missing_runs") or []))
    if note is not None:
        body.insert(0, f"<p style='color:#b00020'><strong>{html.escape(note)}</strong></p>")
    for suite in dict.fromkeys(r["suite"] for r in rows):
        sel = [r for r in rows if r["suite"] == suite]
        body.append(f"<h2>suite {html.escape(suite)}</h2>")
        if suite in OOD_SUITES:
            body += ood_sections(rows, suite, study)
            continue
        for domain in dict.fromkeys(r["domain"] for r in sel if r["domain"] != "-"):
            header, table = pivot(sel, domain, headline_metrics(sel))
            body.append(
                f"<div class='table-wrap'>{html_table(header, table, caption=f'{domain} test set')}</div>"
            )
        body.append(figure_html(figure(rows, suite)))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(html_page("coremtl_lite benchmark", body), encoding="utf-8")
    return path
