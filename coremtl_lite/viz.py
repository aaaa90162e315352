"""Shared plotting helpers: image grids, segmentation colours, depth and normal maps, heatmaps, PNG bytes.

Every tutorial and widget draws through these few functions, so pictures look the same everywhere:

* array conversions -- :func:`to_uint8_image` (a ``(3, H, W)`` float tensor in [0, 1] -> ``(H, W, 3)``
  uint8), :func:`segmentation_to_rgb` (class ids -> a fixed palette, void ``-1`` black),
  :func:`depth_to_rgb` (a viridis-like colour ramp, invalid ``0`` black), :func:`normal_to_rgb`
  (``(n + 1) / 2``, the usual normal-map convention), :func:`prediction_to_rgb` (any task output);
* :func:`png_bytes` -- PNG bytes of an image (Pillow's encoder), used for ``ipywidgets.Image``
  values and saved artefacts;
* plotly figures -- :func:`image_grid` (a grid of RGB panels with titles), :func:`heatmap` (an
  annotated matrix, e.g. gradient cosines, paper Fig. 5) and :func:`line_plot` (curves over training,
  paper Fig. 4);
* the diagnostics' figures (the diagnostics compute numbers, these draw them) --
  :func:`plot_counterfactual_gallery` and :func:`plot_true_vs_model` (counterfactual grids, paper
  Fig. 2), and MT-CRL's :func:`plot_saliency`, :func:`plot_routing`, :func:`plot_task_module_gradients`,
  :func:`plot_task_graph` (:func:`plot_heatmap` underneath);
* the out-of-distribution study's figures -- :func:`band_curves` (a metric against a dial, one line
  per method with a mean ± std band over seeds) and :func:`bound_scatter` (Theorem 2.4: the OOD gap
  against ``L_leak x W1`` with the bound's line through the origin).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, cast

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "SEGMENTATION_PALETTE",
    "TERM_COLOURS",
    "band_curves",
    "bound_scatter",
    "depth_to_rgb",
    "gradient_terms_figure",
    "heatmap",
    "image_grid",
    "line_plot",
    "normal_to_rgb",
    "plot_counterfactual_gallery",
    "plot_heatmap",
    "plot_routing",
    "plot_saliency",
    "plot_task_graph",
    "plot_task_module_gradients",
    "plot_true_vs_model",
    "png_bytes",
    "prediction_to_rgb",
    "segmentation_to_rgb",
    "to_uint8_image",
]

#: RGB colours of segmentation classes 0, 1, 2, ... (ShadedScenes: ground, hemisphere, cone, cylinder,
#: box, pyramid, torus); class ids beyond the palette cycle through it.
SEGMENTATION_PALETTE = np.array(
    [
        [128, 128, 128],
        [230, 25, 75],
        [60, 180, 75],
        [0, 130, 200],
        [255, 225, 25],
        [145, 30, 180],
        [70, 240, 240],
        [245, 130, 48],
        [240, 50, 230],
        [210, 245, 60],
        [250, 190, 212],
        [0, 128, 128],
        [170, 110, 40],
        [128, 0, 0],
        [0, 0, 128],
        [255, 255, 255],
    ],
    dtype=np.uint8,
)

# anchor colours of the viridis colour map (matplotlib's, sampled at 0, 0.25, 0.5, 0.75, 1)
_VIRIDIS = np.array(
    [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]], dtype=np.float64
)


def _as_numpy(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().float().cpu().numpy() if x.is_floating_point() else x.detach().cpu().numpy()
    return np.asarray(x)


def to_uint8_image(image) -> np.ndarray:
    """A ``(3, H, W)`` (or ``(H, W, 3)``) image in [0, 1] as an ``(H, W, 3)`` uint8 array (values clipped)."""
    arr = _as_numpy(image)
    if arr.ndim != 3:
        raise ValueError(f"to_uint8_image expects a (3, H, W) or (H, W, 3) image, got shape {arr.shape}")
    if arr.dtype == np.uint8:
        return (
            np.ascontiguousarray(arr.transpose(1, 2, 0)) if arr.shape[0] == 3 and arr.shape[-1] != 3 else arr
        )
    if arr.shape[0] in (1, 3):  # channels first (an ambiguous (3, H, 3) is read as channels first)
        arr = arr.transpose(1, 2, 0)
    if arr.shape[-1] == 1:
        arr = np.repeat(arr, 3, axis=-1)
    if arr.shape[-1] != 3:
        raise ValueError(f"to_uint8_image: cannot read {arr.shape} as an RGB image")
    return np.ascontiguousarray((np.clip(np.nan_to_num(arr), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8))


def segmentation_to_rgb(segmentation) -> np.ndarray:
    """Class ids ``(H, W)`` (or logits ``(K, H, W)``, arg-maxed) -> ``(H, W, 3)`` uint8; void (< 0) is black."""
    arr = _as_numpy(segmentation)
    if arr.ndim == 3:
        arr = arr.argmax(0)
    if arr.ndim != 2:
        raise ValueError(f"segmentation_to_rgb expects (H, W) ids or (K, H, W) logits, got shape {arr.shape}")
    arr = arr.astype(np.int64)
    out = SEGMENTATION_PALETTE[np.clip(arr, 0, None) % len(SEGMENTATION_PALETTE)].copy()
    out[arr < 0] = 0
    return out


def _ramp(values: np.ndarray) -> np.ndarray:
    """Map values in [0, 1] through the viridis anchors (piecewise linear) to uint8 RGB."""
    pos = np.clip(values, 0.0, 1.0) * (len(_VIRIDIS) - 1)
    lo = np.floor(pos).astype(np.int64).clip(0, len(_VIRIDIS) - 2)
    frac = (pos - lo)[..., None]
    return (_VIRIDIS[lo] * (1.0 - frac) + _VIRIDIS[lo + 1] * frac + 0.5).astype(np.uint8)


def depth_to_rgb(depth, vmin: float | None = None, vmax: float | None = None) -> np.ndarray:
    """Depth ``(1, H, W)`` or ``(H, W)`` -> ``(H, W, 3)`` uint8 on a viridis ramp (near = bright).

    ``vmin``/``vmax`` fix the range (default: the valid pixels' min and max); pixels equal to 0
    (invalid, CONTRIBUTING.md) are black.
    """
    arr = _as_numpy(depth).astype(np.float64)
    if arr.ndim == 3:
        arr = arr[0]
    if arr.ndim != 2:
        raise ValueError(f"depth_to_rgb expects (1, H, W) or (H, W), got shape {arr.shape}")
    valid = arr != 0
    lo = float(arr[valid].min()) if vmin is None and valid.any() else float(vmin or 0.0)
    hi = float(arr[valid].max()) if vmax is None and valid.any() else float(vmax if vmax is not None else 1.0)
    scaled = 1.0 - (arr - lo) / max(hi - lo, 1e-8)  # near (small depth) -> bright
    out = _ramp(scaled)
    out[~valid] = 0
    return out


def normal_to_rgb(normal) -> np.ndarray:
    """Normals ``(3, H, W)`` in [-1, 1] -> ``(H, W, 3)`` uint8 as ``(n + 1) / 2`` (zero normals are black)."""
    arr = _as_numpy(normal).astype(np.float64)
    if arr.ndim != 3 or arr.shape[0] != 3:
        raise ValueError(f"normal_to_rgb expects (3, H, W), got shape {arr.shape}")
    norm = np.linalg.norm(arr, axis=0, keepdims=True)
    unit = np.where(norm > 0, arr / np.maximum(norm, 1e-8), 0.0)
    out = ((unit + 1.0) * 0.5 * 255.0 + 0.5).clip(0, 255).astype(np.uint8).transpose(1, 2, 0)
    out[(norm[0] == 0)] = 0
    return np.ascontiguousarray(out)


def prediction_to_rgb(kind: str, value, **kwargs) -> np.ndarray:
    """One task's prediction or label as an RGB picture, by task kind (segmentation/depth/normal/image)."""
    if kind == "segmentation":
        return segmentation_to_rgb(value)
    if kind == "depth":
        return depth_to_rgb(value, **kwargs)
    if kind == "normal":
        return normal_to_rgb(value)
    if kind == "image":
        return to_uint8_image(value)
    raise ValueError(
        f"prediction_to_rgb: no picture for task kind {kind!r} (segmentation, depth, normal, image)"
    )


def png_bytes(rgb) -> bytes:
    """Encode an ``(H, W, 3)`` uint8 array (or a ``(3, H, W)`` float image) as PNG bytes (8-bit RGB).

    Pillow writes them (torchvision's ``encode_png`` would too, but torchvision deprecates its image
    codecs from 0.29 on).
    """
    import io

    from PIL import Image

    arr = to_uint8_image(rgb) if not (isinstance(rgb, np.ndarray) and rgb.dtype == np.uint8) else rgb
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"png_bytes expects (H, W, 3) uint8, got shape {arr.shape}")
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(arr)).save(buffer, format="PNG", compress_level=6)
    return buffer.getvalue()


def image_grid(
    panels: Sequence,
    titles: Sequence[str] | None = None,
    cols: int | None = None,
    title: str | None = None,
    panel_size: int = 150,
    row_titles: Sequence[str] | None = None,
):
    """A plotly figure showing RGB panels in a grid.

    ``panels`` is a list of ``(H, W, 3)`` uint8 arrays or ``(3, H, W)`` float images, or one
    ``(B, 3, H, W)`` tensor; ``titles`` one string per panel. With ``row_titles`` the number of
    columns is ``len(panels) // len(row_titles)``.
    """
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    if isinstance(panels, (torch.Tensor, np.ndarray)) and np.ndim(panels) == 4:
        panels = list(panels)
    pictures = [to_uint8_image(p) for p in panels]
    if not pictures:
        raise ValueError("image_grid needs at least one panel")
    n = len(pictures)
    if row_titles is not None:
        cols = n // len(row_titles)
    cols = cols or min(n, 6)
    rows = (n + cols - 1) // cols
    fig = make_subplots(
        rows=rows,
        cols=cols,
        subplot_titles=list(titles) if titles else None,
        horizontal_spacing=0.01,
        vertical_spacing=0.06 if titles else 0.01,
    )
    for i, pic in enumerate(pictures):
        fig.add_trace(go.Image(z=pic), row=i // cols + 1, col=i % cols + 1)
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    if row_titles is not None:
        for r, text in enumerate(row_titles):
            fig.update_yaxes(
                title_text=text,
                visible=True,
                showticklabels=False,
                showgrid=False,
                zeroline=False,
                row=r + 1,
                col=1,
            )
    fig.update_layout(
        title=title,
        height=rows * panel_size + 60 + (20 * rows if titles else 0),
        width=max(cols * panel_size, 300),
        margin=dict(l=40 if row_titles else 10, r=10, t=60 if title else 30, b=10),
    )
    return fig


def heatmap(
    matrix,
    labels: Sequence[str] | None = None,
    title: str | None = None,
    zmin: float = -1.0,
    zmax: float = 1.0,
    colorscale: str = "RdBu",
    annotate: bool = True,
    col_labels=None,
):
    """An annotated plotly heatmap of a square (or ``rows x cols``) matrix, e.g. gradient cosines (Fig. 5)."""
    import plotly.graph_objects as go

    mat = _as_numpy(matrix).astype(np.float64)
    if mat.ndim != 2:
        raise ValueError(f"heatmap expects a 2-d matrix, got shape {mat.shape}")
    rows = list(labels) if labels is not None else [str(i) for i in range(mat.shape[0])]
    cols = (
        list(col_labels)
        if col_labels is not None
        else (rows if mat.shape[0] == mat.shape[1] else [str(i) for i in range(mat.shape[1])])
    )
    fig = go.Figure(
        go.Heatmap(
            z=mat,
            x=cols,
            y=rows,
            zmin=zmin,
            zmax=zmax,
            colorscale=colorscale,
            text=np.round(mat, 2) if annotate else None,
            texttemplate="%{text}" if annotate else None,
        )
    )
    fig.update_yaxes(autorange="reversed")
    fig.update_layout(title=title, width=120 + 60 * len(cols), height=100 + 60 * len(rows))
    return fig


def line_plot(
    x,
    series: dict[str, Sequence[float]],
    title: str | None = None,
    xlabel: str = "step",
    ylabel: str = "",
    hline: float | None = None,
):
    """Curves ``{name: ys}`` over a shared ``x`` (or ``{name: (xs, ys)}``), e.g. gradient cosines over training."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for name, ys in series.items():
        xs, vals = cast(tuple[Any, Any], ys if isinstance(ys, tuple) and len(ys) == 2 else (x, ys))
        fig.add_trace(go.Scatter(x=list(xs), y=list(vals), mode="lines+markers", name=name))
    if hline is not None:
        fig.add_hline(y=hline, line_dash="dot", line_color="grey")
    fig.update_layout(title=title, xaxis_title=xlabel, yaxis_title=ylabel, height=380)
    return fig


#: colours of the objective's terms in :func:`gradient_terms_figure` (the same term, the same colour)
TERM_COLOURS = {"task": "#1f77b4", "rec": "#2ca02c", "ind": "#d62728", "cfa": "#9467bd"}


def gradient_terms_figure(history, title: str = "Which term drives the shared encoder"):
    """Two panels over training from the trainer's ``grad/<term>_norm`` and ``grad/<term>_cos`` logs
    (:mod:`coremtl_lite.train.grad_log`): each term's gradient norm on the shared encoder (log scale),
    and each extra term's cosine with the task gradient (0 = orthogonal, < 0 = against the tasks)."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    terms = [
        k[len("grad/") : -len("_norm")]
        for k in history.step_keys()
        if k.startswith("grad/") and k.endswith("_norm")
    ]
    fig = make_subplots(
        rows=1,
        cols=2,
        subplot_titles=("gradient norm on the shared encoder", "cosine with the task gradient"),
    )
    for term in terms:
        colour = TERM_COLOURS.get(term)
        xs, ys = history.step_series(f"grad/{term}_norm")
        fig.add_trace(
            go.Scatter(x=xs, y=ys, mode="lines", name=term, legendgroup=term, line=dict(color=colour)),
            row=1,
            col=1,
        )
        xs, ys = history.step_series(f"grad/{term}_cos")
        if ys:
            fig.add_trace(
                go.Scatter(
                    x=xs,
                    y=ys,
                    mode="lines",
                    name=term,
                    legendgroup=term,
                    showlegend=False,
                    line=dict(color=colour),
                ),
                row=1,
                col=2,
            )
    fig.add_hline(y=0.0, line_dash="dot", line_color="grey", row=1, col=2)
    fig.update_yaxes(type="log", row=1, col=1)
    fig.update_yaxes(range=[-1, 1], row=1, col=2)
    fig.update_xaxes(title_text="step")
    fig.update_layout(title=title, height=380)
    return fig


# --------------------------------------------------------------------------- counterfactual galleries
def plot_counterfactual_gallery(
    grid: Tensor,
    contents: Tensor | None = None,
    donors: Tensor | None = None,
    title: str = "Counterfactuals: content (rows) x residual donor (columns)",
    panel_size: int = 110,
):
    """A plotly gallery of a counterfactual grid; the first row/column show the donors/contents."""
    b, bd = grid.shape[:2]
    # the diagonal is a reconstruction only when the donors are the contents themselves
    self_donors = donors is None or (
        contents is not None and donors.shape == contents.shape and torch.equal(donors, contents)
    )
    panels, titles = [], []
    blank = torch.ones(3, *grid.shape[-2:])
    if donors is not None:
        panels.append(blank)
        titles.append("")
        for j in range(bd):
            panels.append(donors[j])
            titles.append(f"donor {j}")
    for i in range(b):
        if contents is not None:
            panels.append(contents[i])
            titles.append(f"content {i}")
        for j in range(bd):
            panels.append(grid[i, j])
            titles.append("recon" if i == j and self_donors else f"s{i} + r{j}")
    cols = bd + (1 if contents is not None else 0)
    if donors is not None and contents is None:
        panels, titles = panels[1:], titles[1:]
    return image_grid(panels, titles, cols=cols, title=title, panel_size=panel_size)


def plot_true_vs_model(
    model_grid: Tensor,
    true_grid: Tensor,
    pairs: Sequence[tuple[int, int]],
    errors: dict | None = None,
    panel_size: int = 120,
):
    """For each ``(i, j)``: the true counterfactual ``render(s_i, r_j)`` ("true si+rj"), the model's
    ``D(z_s(x_i), z_p(x_j))`` ("model si+rj"), and |difference|."""
    panels, titles = [], []
    for i, j in pairs:
        diff = (model_grid[i, j] - true_grid[i, j]).abs().mean(0, keepdim=True).expand(3, -1, -1)
        diff = diff / diff.max().clamp_min(1e-6)
        l1 = float((model_grid[i, j] - true_grid[i, j]).abs().mean())
        panels += [true_grid[i, j], model_grid[i, j], diff]
        titles += [f"true s{i}+r{j}", f"model s{i}+r{j}", f"|diff|, L1 {l1:.3f}"]
    title = "True vs model counterfactuals"
    if errors:
        title += f" -- mean L1 {errors['l1']:.3f}"
    return image_grid(panels, titles, cols=3, title=title, panel_size=panel_size)


# ------------------------------------------------------------------ MT-CRL's saliency and routing figures
def _names(prefix: str, n: int) -> list[str]:
    return [f"{prefix} {i}" for i in range(n)]


def plot_heatmap(
    values: Tensor,
    row_names: Sequence[str],
    col_names: Sequence[str],
    title: str,
    diverging: bool = False,
    zrange: tuple[float, float] | None = None,
):
    """A plotly heatmap of a (rows, cols) tensor; ``zrange`` fixes the colour scale (e.g. (0, 1))."""
    import plotly.graph_objects as go

    v = values.detach().cpu().float()
    kwargs: dict[str, Any] = {"colorscale": "RdBu", "zmid": 0.0} if diverging else {"colorscale": "Viridis"}
    if zrange is not None:
        kwargs.update(zmin=float(zrange[0]), zmax=float(zrange[1]))
    fig = go.Figure(go.Heatmap(z=v.tolist(), x=list(col_names), y=list(row_names), **kwargs))
    fig.update_layout(
        title=title, height=120 + 40 * len(row_names), margin={"l": 60, "r": 20, "t": 50, "b": 40}
    )
    return fig


def plot_routing(routing: Tensor, task_names: Sequence[str], title: str = "Task-to-module graph A"):
    """Heatmap of the learned routing graph A (T, K) (MT-CRL Fig. 16), on the fixed colour scale [0, 1]."""
    return plot_heatmap(routing, task_names, _names("module", routing.shape[1]), title, zrange=(0.0, 1.0))


def plot_task_module_gradients(
    diff: Tensor, task_names: Sequence[str], title: str = "(valid - train) task-to-module gradients"
):
    """Diverging heatmap of (valid - train) task-to-module gradients (MT-CRL Fig. 4-5, 13-14)."""
    return plot_heatmap(diff, task_names, _names("module", diff.shape[1]), title, diverging=True)


def plot_task_graph(
    similarity: Tensor,
    task_names: Sequence[str],
    threshold: float = 0.1,
    title: str = "Task similarity induced by A",
):
    """A task-similarity graph (``similarity``: (T, T), e.g.
    :func:`coremtl_lite.diagnostics.spurious.task_similarity` of a routing graph A): tasks on a circle,
    an edge where the similarity exceeds ``threshold`` (MT-CRL Fig. 10 used 0.1), edge width proportional to it."""
    import math

    import plotly.graph_objects as go

    sim = similarity.detach().cpu().float()
    n = len(task_names)
    xy = [(math.cos(2 * math.pi * i / n), math.sin(2 * math.pi * i / n)) for i in range(n)]
    fig = go.Figure()
    for i in range(n):
        for j in range(i + 1, n):
            s = float(sim[i, j])
            if s > threshold:
                fig.add_trace(
                    go.Scatter(
                        x=[xy[i][0], xy[j][0]],
                        y=[xy[i][1], xy[j][1]],
                        mode="lines",
                        line={"width": 1 + 8 * s, "color": "rgba(60,60,160,0.6)"},
                        hovertext=f"{task_names[i]}-{task_names[j]}: {s:.2f}",
                        showlegend=False,
                    )
                )
    fig.add_trace(
        go.Scatter(
            x=[p[0] for p in xy],
            y=[p[1] for p in xy],
            mode="markers+text",
            text=list(task_names),
            textposition="top center",
            marker={"size": 18},
            showlegend=False,
        )
    )
    fig.update_layout(
        title=title, xaxis={"visible": False}, yaxis={"visible": False, "scaleanchor": "x"}, height=360
    )
    return fig


def plot_saliency(maps: dict[str, Tensor], title: str = "Input-gradient saliency"):
    """Side-by-side saliency maps ``{label: (H, W) or (D,)}`` (MT-CRL Fig. 3 and 7)."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    labels = list(maps)
    fig = make_subplots(rows=1, cols=len(labels), subplot_titles=labels)
    for c, lab in enumerate(labels, start=1):
        m = maps[lab].detach().cpu().float()
        m = m / m.max().clamp_min(1e-12)
        if m.dim() == 1:
            fig.add_trace(go.Bar(y=m.tolist(), showlegend=False), row=1, col=c)
        else:
            fig.add_trace(go.Heatmap(z=m.flip(0).tolist(), colorscale="Hot", showscale=False), row=1, col=c)
    fig.update_layout(title=title, height=300)
    return fig


# ------------------------------------------------------------------------- out-of-distribution study
_LINE_COLOURS = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
)


def _rgba(hex_colour: str, alpha: float) -> str:
    r, g, b = (int(hex_colour[i : i + 2], 16) for i in (1, 3, 5))
    return f"rgba({r},{g},{b},{alpha})"


def band_curves(
    curves: Mapping[str, Mapping[str, Sequence[float]]],
    title: str,
    xlabel: str,
    ylabel: str,
    dashed: Sequence[str] = ("trivial",),
):
    """A metric against a dial: per method a line of the mean over seeds and a ``mean ± std`` band.

    ``curves`` maps a method to ``{"x": [...], "mean": [...], "std": [...]}`` (x increasing). Each
    method gets two traces: its band (a closed polygon, ``fill="toself"``, legend-grouped with the line
    and hidden from the legend) and its line; the methods in ``dashed`` (the trivial predictor) get a
    dashed line only.
    """
    import plotly.graph_objects as go

    fig = go.Figure()
    coloured = [name for name in curves if name not in dashed]
    for name, c in curves.items():
        x, mean, std = (np.asarray(c[key], dtype=float) for key in ("x", "mean", "std"))
        if not x.size == mean.size == std.size:
            raise ValueError(f"band_curves: {name!r} has {x.size} x, {mean.size} means and {std.size} stds")
        if name in dashed:
            fig.add_scatter(x=x, y=mean, mode="lines", name=name, line=dict(color="black", dash="dash"))
            continue
        colour = _LINE_COLOURS[coloured.index(name) % len(_LINE_COLOURS)]
        fig.add_scatter(
            x=np.concatenate([x, x[::-1]]),
            y=np.concatenate([mean + std, (mean - std)[::-1]]),
            mode="lines",  # the outline only: plotly's default adds a marker at every corner
            fill="toself",
            fillcolor=_rgba(colour, 0.2),
            line=dict(width=0),
            hoverinfo="skip",
            legendgroup=name,
            showlegend=False,
            name=f"{name} ± std",
        )
        fig.add_scatter(
            x=x, y=mean, mode="lines+markers", name=name, legendgroup=name, line=dict(color=colour)
        )
    fig.update_layout(title=title, xaxis_title=xlabel, yaxis_title=ylabel, height=480)
    return fig


def bound_scatter(
    points: Sequence[dict[str, Any]],
    slope: float,
    stats: dict[str, float] | None = None,
    title: str = "Theorem 2.4: OOD gap against L_leak x W1",
    ylabel: str = "OOD gap",
):
    """Theorem 2.4's test: one marker per (run, severity) at ``(L_leak x W1, gap)``, one trace per
    method (``points``: dicts with ``x``, ``gap``, ``method`` and optionally ``label``), and the bound's
    line ``gap = slope x`` through the origin (lambda* = 0), dashed. ``stats`` (Pearson and Spearman
    with their CIs, :func:`coremtl_lite.diagnostics.ood_bound.correlations`) go into the title."""
    import plotly.graph_objects as go

    fig = go.Figure()
    methods = list(dict.fromkeys(p["method"] for p in points))
    for k, m in enumerate(methods):
        mine = [p for p in points if p["method"] == m]
        fig.add_scatter(
            x=[p["x"] for p in mine],
            y=[p["gap"] for p in mine],
            mode="markers",
            name=m,
            text=[p.get("label", "") for p in mine],
            marker=dict(color=_LINE_COLOURS[k % len(_LINE_COLOURS)], size=8),
        )
    top = max((p["x"] for p in points), default=0.0)
    fig.add_scatter(
        x=[0.0, top],
        y=[0.0, slope * top],
        mode="lines",
        name=f"bound, K = {slope:.3g}",
        line=dict(color="black", dash="dash"),
    )
    if stats:
        title += (
            f"<br><sup>Pearson {stats['pearson']:.2f} [{stats['pearson_lo']:.2f}, {stats['pearson_hi']:.2f}], "
            f"Spearman {stats['spearman']:.2f} [{stats['spearman_lo']:.2f}, {stats['spearman_hi']:.2f}] "
            f"(95% bootstrap over {stats['runs']} runs)</sup>"
        )
    fig.update_layout(title=title, xaxis_title="L_leak x W1", yaxis_title=ylabel, height=460)
    return fig
