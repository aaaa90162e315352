"""Figures and the HTML report (coremtl_lite.report), and the live-curves callback logic."""

from __future__ import annotations

import math
from types import SimpleNamespace

import plotly.graph_objects as go
import pytest

from coremtl_lite.report import (
    LiveCurves,
    curves_figure,
    id_ood_figure,
    id_ood_rows,
    id_ood_table,
    smooth,
    table_figure,
    update_curves,
    write_report,
)
from coremtl_lite.train import History


def _history(n: int = 6, cka: bool = True) -> History:
    steps = []
    for s in range(n):
        rec = {
            "step": s,
            "epoch": s // 3,
            "loss/total": 3.0 - 0.1 * s,
            "loss/depth": 1.0 - 0.05 * s,
            "loss/normal": 2.0 - 0.05 * s,
            "loss/extra": 0.0,
        }
        if cka:
            rec["obj/cka"] = 0.9 - 0.1 * s
        steps.append(rec)
    return History(steps=steps, epochs=[{"epoch": 1, "score": 0.0}, {"epoch": 2, "score": 4.0}])


def test_smooth_is_a_trailing_mean():
    assert smooth([1.0, 3.0, 5.0, 7.0], 2) == [1.0, 2.0, 4.0, 6.0]
    assert smooth([2.0], 5) == [2.0]
    with pytest.raises(ValueError):
        smooth([1.0], 0)


def test_curves_figure_has_every_series():
    fig = curves_figure({"core": _history(), "ew": _history(cka=False)}, smooth_window=1)
    names = [(t.legendgroup, t.name) for t in fig.data]
    assert ("core", "depth") in names and ("core", "cka") in names and ("ew", "cka") not in names
    cka = next(t for t in fig.data if (t.legendgroup, t.name) == ("core", "cka"))
    assert list(cka.y) == pytest.approx([0.9 - 0.1 * s for s in range(6)])
    score = next(t for t in fig.data if (t.legendgroup, t.name) == ("ew", "val score"))
    assert list(score.x) == [1, 2] and list(score.y) == [0.0, 4.0]
    # readable legend: a quantity has one colour in every run, a run one line style
    depth = [t for t in fig.data if t.name == "depth"]
    assert len({t.line.color for t in depth}) == 1 and len({t.line.dash for t in depth}) == 2


def test_live_curves_update_traces_in_place():
    fig = go.Figure()
    live = LiveCurves(fig, every=2, smooth_window=1)
    h = History(steps=_history().steps[:3])
    trainer = SimpleNamespace(history=h)
    live.on_step_end(trainer, h.steps[0])  # step 0: (0 + 1) % 2 != 0, nothing drawn yet
    assert len(fig.data) == 0
    live.on_step_end(trainer, h.steps[1])
    assert [t.name for t in fig.data] == ["loss/total", "loss/depth", "loss/normal", "obj/cka"]
    assert list(fig.data[3].y) == pytest.approx([0.9, 0.8, 0.7])
    h.steps.append(_history().steps[3])
    live.on_epoch_end(trainer, h)
    assert list(fig.data[0].x) == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="traces"):
        update_curves(go.Figure(), h, ["loss/total"])

    class Handle:  # what IPython's display(live, display_id=True) returns
        def __init__(self):
            self.shown = []

        def update(self, obj):
            bundle = (
                obj._repr_mimebundle_()
            )  # what IPython sends: the plotly mime bundle, not the figure object
            self.shown.append(len(bundle["application/vnd.plotly.v1+json"]["data"][0]["x"]))

    handle = Handle()
    live = LiveCurves(go.Figure(), keys=["loss/depth"], every=1, handle=handle)
    live.on_step_end(trainer, h.steps[0])
    live.on_epoch_end(trainer, h)
    assert handle.shown == [4, 4] and [t.name for t in live.fig.data] == ["loss/depth"]


def test_id_ood_rows_table_and_figures():
    res = {
        "A": {
            "source": {"segmentation": {"mIoU": 0.6}, "depth": {"abs_err": 0.1}, "normal": {"mean": 20.0}},
            "target": {"segmentation": {"mIoU": 0.4}, "depth": {"abs_err": 0.3}, "normal": {"mean": 30.0}},
        },
        "B": {"source": {"segmentation": {"mIoU": 0.5}}},
    }
    rows = id_ood_rows(res)
    assert rows[0]["seg mIoU gap"] == pytest.approx(-0.2) and rows[0]["normal mean angle (deg) gap"] == 10.0
    assert math.isnan(rows[1]["depth abs err (source)"])
    text = id_ood_table(rows)
    assert text.splitlines()[0].split()[:2] == ["metric", "run"] and "A" in text and "nan" in text
    assert max(len(line) for line in text.splitlines()) <= 100
    assert len(table_figure(rows).data) == 1
    assert len(id_ood_figure(res).data) == 6  # 2 runs x 3 metrics


def test_write_report_embeds_plotly_once(tmp_path):
    fig = curves_figure(_history())
    path = write_report(
        tmp_path / "r" / "report.html",
        "Title <x>",
        [("one", fig), ("two", fig), ("text", "a < b"), ("html", "<p>ok</p>")],
    )
    text = path.read_text()
    assert (
        text.count("plotly.js v") <= 2
        and "cdn.plot.ly/plotly" not in text
        and "Title &lt;x&gt;" in text
        and "a &lt; b" in text
        and "<p>ok</p>" in text
    )
    assert text.count('class="plotly-graph-div"') == 2
    with pytest.raises(TypeError, match="section"):
        write_report(tmp_path / "bad.html", "t", [("x", 3)])
