"""The out-of-distribution study's numbers, from the bench rows and run records of ``ood-severity`` and
``ood-rho`` (:mod:`coremtl_lite.bench.suites`): the curves against severity and against rho, the factor
table, and Theorem 2.4's scatter (the OOD gap against ``L_leak x W1``, with the bound's line and the
correlations). The figures are drawn by :func:`coremtl_lite.viz.band_curves` and
:func:`coremtl_lite.viz.bound_scatter`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from coremtl_lite.bench.suites import FACTOR_DOMAINS, SHIFT_DOMAINS, split_rho
from coremtl_lite.diagnostics.ood_bound import bound_fit, correlations
from coremtl_lite.experiments.aggregate import format_mean_std, mean_std

__all__ = [
    "OOD_METRICS",
    "across_models",
    "factor_table",
    "ood_study",
    "rho_curves",
    "robustness_table",
    "severity_curves",
    "summary_row",
    "theorem24",
    "theorem24_figures",
]

#: the target metric of each dense task drawn against the dials (True: higher is better)
OOD_METRICS = {"segmentation": ("mIoU", True), "depth": ("abs_err", False), "normal": ("mean", False)}


def summary_row(rows, suite, variant, domain, task, metric) -> dict[str, Any] | None:
    """The summary row of (suite, variant, domain, task, metric), or None when the bench has none."""
    key = (suite, variant, domain, task, metric)
    return next(
        (r for r in rows if (r["suite"], r["variant"], r["domain"], r["task"], r["metric"]) == key), None
    )


def severity_curves(
    rows: Sequence[dict[str, Any]], task: str, metric: str, suite: str = "ood-severity"
) -> dict[str, dict[str, list[float]]]:
    """``{variant: {"x": severities, "mean", "std"}}`` of ``task``/``metric`` on the ``shift:<s>`` domains
    (the trivial predictor included); a variant missing a severity is drawn without it."""
    out: dict[str, dict[str, list[float]]] = {}
    for variant in dict.fromkeys(r["variant"] for r in rows if r["suite"] == suite):
        curve: dict[str, list[float]] = {"x": [], "mean": [], "std": []}
        for domain in SHIFT_DOMAINS:
            r = summary_row(rows, suite, variant, domain, task, metric)
            if r is not None:
                curve["x"].append(float(domain.partition(":")[2]))
                curve["mean"].append(r["mean"])
                curve["std"].append(r["std"])
        if curve["x"]:
            out[variant] = curve
    return out


def rho_curves(
    rows: Sequence[dict[str, Any]], task: str, metric: str, suite: str = "ood-rho", domain: str = "target"
) -> dict[str, dict[str, list[float]]]:
    """``{method: {"x": training rhos, "mean", "std"}}`` of ``task``/``metric`` on ``domain``, from the
    variants ``<method>@rho=<r>``; the trivial predictor is one of them (``trivial@rho=<r>``, fitted on that
    rho's training split; equal across rho, which changes the appearance, not the labels)."""
    points: dict[str, list[tuple[float, float, float]]] = {}
    for r in rows:
        if (r["suite"], r["domain"], r["task"], r["metric"]) != (suite, domain, task, metric):
            continue
        parsed = split_rho(r["variant"])
        if parsed is not None:
            points.setdefault(parsed[0], []).append((parsed[1], r["mean"], r["std"]))
    return {
        m: {
            "x": [p[0] for p in sorted(v)],
            "mean": [p[1] for p in sorted(v)],
            "std": [p[2] for p in sorted(v)],
        }
        for m, v in points.items()
    }


def factor_table(
    rows: Sequence[dict[str, Any]], task: str, metric: str, suite: str = "ood-severity"
) -> tuple[list[str], list[list[str]]]:
    """Which factor breaks which model: per variant ``task``/``metric`` on the source and on each
    ``only:<group>`` domain (one residual group fully shifted), as ``mean ± std``, the change from the
    source in brackets."""
    domains = ("source", *FACTOR_DOMAINS)
    header = ["variant", *(f"{d} {metric}" for d in domains)]
    body = []
    for variant in dict.fromkeys(r["variant"] for r in rows if r["suite"] == suite):
        src = summary_row(rows, suite, variant, "source", task, metric)
        line = [variant]
        for d in domains:
            r = summary_row(rows, suite, variant, d, task, metric)
            if r is None:
                line.append("–")
                continue
            text = format_mean_std(r["mean"], r["std"], r["n"])
            line.append(text if d == "source" or src is None else f"{text} ({r['mean'] - src['mean']:+.3g})")
        if len(line) > 1 and any(c != "–" for c in line[1:]):
            body.append(line)
    return header, body


def theorem24(
    records: Sequence[dict[str, Any]], probe: str = "ood_bound", n_boot: int = 1000
) -> dict[str, Any]:
    """Theorem 2.4 over every run that holds the probe's numbers (a record of ``ood-severity``).

    Returns ``{"points": [...], "fits": {task: {...}}, "across_models": {task: {...}}}``: one point
    per (run, severity, task) with ``method``, ``seed``, ``severity``, ``task``, ``gap``, ``L_leak``,
    ``W1`` and ``x = L_leak x W1``;
    per task (``"total"`` included) the bound's slope ``K`` with ``lambda* = 0``
    (:func:`~coremtl_lite.diagnostics.ood_bound.bound_fit`) and the correlations of the gap with ``x``,
    with bootstrap CIs over runs (:func:`~coremtl_lite.diagnostics.ood_bound.correlations`); and
    :func:`across_models`, the test of ``L_leak`` at one severity.
    """
    points = []
    for rec in records:
        numbers = rec.get(probe)
        if not numbers:
            continue
        for p in numbers["points"]:
            for task, gap in p["gap"].items():
                points.append(
                    {
                        "method": rec["variant"],
                        "seed": rec["seed"],
                        "severity": p["severity"],
                        "task": task,
                        "gap": gap,
                        "L_leak": numbers["L_leak"],
                        "W1": p["W1"],
                        "x": numbers["L_leak"] * p["W1"],
                        "label": f"{rec['variant']} seed {rec['seed']} s={p['severity']:g}",
                    }
                )
    fits = {}
    for task in dict.fromkeys(p["task"] for p in points):
        mine = [p for p in points if p["task"] == task]
        x, gap = [p["x"] for p in mine], [p["gap"] for p in mine]
        fits[task] = bound_fit(x, gap) | correlations(
            x, gap, [(p["method"], p["seed"]) for p in mine], n_boot=n_boot
        )
    return {"points": points, "fits": fits, "across_models": across_models(points, n_boot=n_boot)}


def across_models(points: Sequence[dict[str, Any]], n_boot: int = 1000) -> dict[str, Any]:
    """Theorem 2.4's ``L_leak`` factor on its own: at the strongest severity of ``points`` (one
    :func:`theorem24` point per run and task), the correlation over runs of the OOD gap with
    ``L_leak``, with bootstrap CIs over runs.

    Every model of the study sees the same residual shift, so at one severity ``W1`` is one number and
    ``x = L_leak x W1`` ranks the models by ``L_leak`` alone. The correlation of :func:`theorem24`'s
    fits runs over every severity as well, and there ``W1`` (the size of the shift, from 0 to its
    largest value) carries it: it says the gap grows with the shift, not that a model with less
    leakage degrades less. Returns ``{task: {"severity", "pearson", "spearman", ..._lo/_hi, "n",
    "runs"}}`` (NaN correlations where fewer than 3 runs or no spread exist).
    """
    if not points:
        return {}
    top = max(p["severity"] for p in points)
    out = {}
    for task in dict.fromkeys(p["task"] for p in points):
        mine = [p for p in points if p["task"] == task and p["severity"] == top]
        if len(mine) < 3:
            nan = math.nan
            out[task] = {"severity": top, "n": len(mine), "runs": len(mine), "pearson": nan, "spearman": nan}
            out[task] |= {f"{k}_{e}": nan for k in ("pearson", "spearman") for e in ("lo", "hi")}
            continue
        out[task] = {"severity": top} | correlations(
            [p["L_leak"] for p in mine],
            [p["gap"] for p in mine],
            [(p["method"], p["seed"]) for p in mine],
            n_boot=n_boot,
        )
    return out


def theorem24_figures(theorem: dict[str, Any]) -> list:
    """One :func:`~coremtl_lite.viz.bound_scatter` per task of :func:`theorem24`'s result."""
    from coremtl_lite.viz import bound_scatter

    figs = []
    for task, fit in theorem["fits"].items():
        mine = [p for p in theorem["points"] if p["task"] == task]
        figs.append(
            bound_scatter(
                mine,
                fit["K"],
                fit,
                title=f"Theorem 2.4, {task}: OOD gap against L_leak x W1",
                ylabel=f"{task} risk on shift:s minus on source",
            )
        )
    return figs


def robustness_table(
    records: Sequence[dict[str, Any]], probe: str = "robustness"
) -> tuple[list[str], list[list[str]]]:
    """The robustness ratio per variant (mean ± std over seeds), colour jitter and source -> target, with
    what the ratio compares (:func:`~coremtl_lite.diagnostics.robustness.stream_names`). Dual-stream
    variants first: CORE-MTL is compared like with like against ``ds``, the dual-stream model without
    its losses; the vanilla rows compare the encoder map with its own pooled summary."""
    by: dict[str, list[dict[str, Any]]] = {}
    for rec in records:
        if rec.get(probe):
            by.setdefault(rec["variant"], []).append(rec[probe])
    order = sorted(by, key=lambda v: "dual stream" not in by[v][0]["streams"])

    def cell(vals: list[float]) -> str:
        return format_mean_std(*mean_std(vals), len(vals), digits=3)

    header = ["variant", "streams compared", "ratio, colour jitter", "ratio, source -> target", "seeds"]
    body = [
        [
            v,
            by[v][0]["streams"],
            cell([r["intra"] for r in by[v]]),
            cell([r["cross"] for r in by[v]]),
            str(len(by[v])),
        ]
        for v in order
    ]
    return header, body


def ood_study(records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The JSON-ready numbers of the study's probed runs: ``{"theorem24": theorem24(records),
    "robustness": {"header", "rows", "runs"}}`` (:func:`theorem24`, :func:`robustness_table`; ``runs``:
    each run's ratios, ``{"variant", "seed", "intra", "cross", "streams"}``, so a reader can see which seed
    a spread comes from)."""
    header, body = robustness_table(records)
    runs = [
        {"variant": rec["variant"], "seed": rec["seed"], **rec["robustness"]}
        for rec in records
        if rec.get("robustness")
    ]
    return {"theorem24": theorem24(records), "robustness": {"header": header, "rows": body, "runs": runs}}
