"""Interactive widgets (ipywidgets) for the tutorials; their logic lives in plain, tested functions.

:func:`residual_swap_widget` is the residual-swap explorer of tutorial 03 (paper Fig. 2, §4.4.1):
pick a content image and a residual donor, and slide the residual code ``z_p`` from the image's own
to the donor's, ``z_p(α) = (1 - α) z_p(content) + α z_p(donor)``. It shows, live, the decoded image
``D(z_s(content), z_p(α))``, the model's segmentation, depth and normal predictions *on that decoded
image*, and on ShadedScenes the true counterfactual, rendered from the content's semantic factors and
the residual factors interpolated the same way (:func:`coremtl_lite.diagnostics.leakage.interpolate_residual`).

All the work is done by :func:`swap_view`, which returns arrays; the widget only converts them to
PNG bytes (:func:`coremtl_lite.viz.png_bytes`) for ``ipywidgets.Image``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import numpy as np
import torch
from torch import nn

from coremtl_lite.diagnostics.leakage import interpolate_residual
from coremtl_lite.diagnostics.streams import is_dual_stream, model_output
from coremtl_lite.protocols import GroundedModel, RenderableScenes
from coremtl_lite.viz import png_bytes, prediction_to_rgb, to_uint8_image

__all__ = ["enlarge", "residual_swap_widget", "swap_view"]

PANELS = ("content", "donor", "decoded", "true", "segmentation", "depth", "normal")


def enlarge(rgb: np.ndarray, min_size: int = 128) -> np.ndarray:
    """Nearest-neighbour upscaling of an ``(H, W, 3)`` array by an integer factor to at least ``min_size``."""
    factor = max(1, -(-min_size // max(rgb.shape[0], 1)))
    return np.repeat(np.repeat(rgb, factor, axis=0), factor, axis=1) if factor > 1 else rgb


@torch.no_grad()
def swap_view(model: nn.Module, scenes, content_idx: int, donor_idx: int, alpha: float) -> dict:
    """Everything the residual-swap widget shows, for one setting of its controls.

    Args:
        model: a dual-stream model (``z_s``, ``z_p``, ``decode``).
        scenes: a dataset with ``get_batch``; ShadedScenes (with ``sample_factors`` and ``render``)
            also yields the true counterfactual.
        content_idx, donor_idx: scene indices.
        alpha: in [0, 1]; 0 keeps the content's own ``z_p``, 1 takes the donor's.

    Returns a dict of ``(H, W, 3)`` uint8 arrays -- ``content``, ``donor``, ``decoded``, ``true``
    (``None`` without a renderer), ``segmentation``/``depth``/``normal`` (the model's predictions on
    the decoded image, for the tasks it has) and ``labels`` (the content's true labels by task) -- and
    floats: ``alpha``, ``l1_true`` (mean |decoded - true|, or None) and ``zp_shift``
    (``||z_p(α) - z_p(content)||``).
    """
    if not is_dual_stream(model):
        raise TypeError(
            f"{type(model).__name__} has no decode(z_s, z_p): the residual swap needs a dual-stream model"
        )
    if not 0.0 <= float(alpha) <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    content_idx, donor_idx, alpha = int(content_idx), int(donor_idx), float(alpha)
    batch = scenes.get_batch([content_idx, donor_idx])
    was_training = model.training
    model.eval()
    try:
        device = next(model.parameters()).device
        out = model_output(model, batch["image"].to(device))
        z_s, z_p = out["z_s"][:1], out["z_p"]
        zp_alpha = (1.0 - alpha) * z_p[:1] + alpha * z_p[1:2]
        decoded = cast(GroundedModel, model).decode(z_s, zp_alpha)
        recon = (decoded["recon"] if isinstance(decoded, dict) else decoded).float().clamp(0, 1)
        preds = model_output(model, recon)["preds"]
    finally:
        model.train(was_training)
    kinds = {name: info.get("kind") for name, info in getattr(scenes, "task_info", {}).items()}
    view: dict = {
        "content": to_uint8_image(batch["image"][0]),
        "donor": to_uint8_image(batch["image"][1]),
        "decoded": to_uint8_image(recon[0].cpu()),
        "alpha": alpha,
        "zp_shift": float((zp_alpha - z_p[:1]).norm()),
        "labels": {},
    }
    for name, kind in kinds.items():
        if kind in ("segmentation", "depth", "normal"):
            if name in preds:
                view[name] = prediction_to_rgb(kind, preds[name][0].float().cpu())
            if name in batch:
                view["labels"][name] = prediction_to_rgb(kind, batch[name][0])
    view["true"], view["l1_true"] = None, None
    if isinstance(scenes, RenderableScenes):
        factors = scenes.sample_factors([content_idx, donor_idx])
        sem = {k: v[:1] for k, v in factors["semantic"].items()}
        res_c = {k: v[:1] for k, v in factors["residual"].items()}
        res_d = {k: v[1:2] for k, v in factors["residual"].items()}
        res = interpolate_residual(res_c, res_d, alpha, sem, discrete_from_donor=alpha >= 0.5)
        true = scenes.render(sem, res)["image"][0].float()
        view["true"] = to_uint8_image(true)
        view["l1_true"] = float((recon[0].cpu() - true).abs().mean())
    return view


def residual_swap_widget(
    model: nn.Module,
    scenes,
    indices: Sequence[int] = tuple(range(8)),
    content_idx: int | None = None,
    donor_idx: int | None = None,
    alpha: float = 0.0,
    size: int = 128,
):
    """The residual-swap explorer (tutorial 03): dropdowns for content and donor, a slider for α.

    Returns an ``ipywidgets.VBox``; its ``.view`` attribute holds the latest :func:`swap_view` dict
    and ``.controls`` the ``(content, donor, alpha)`` widgets. The decoded image's widget carries the
    CSS class ``coremtl-decoded`` (the browser test looks for it).
    """
    import ipywidgets as W

    indices = [int(i) for i in indices]
    if len(indices) < 2:
        raise ValueError("residual_swap_widget needs at least 2 scene indices to choose from")
    content = W.Dropdown(
        options=[(f"scene {i}", i) for i in indices],
        value=indices[0] if content_idx is None else int(content_idx),
        description="content",
    )
    donor = W.Dropdown(
        options=[(f"scene {i}", i) for i in indices],
        value=indices[1] if donor_idx is None else int(donor_idx),
        description="donor",
    )
    slider = W.FloatSlider(
        value=float(alpha),
        min=0.0,
        max=1.0,
        step=0.05,
        description="α (z_p mix)",
        continuous_update=False,
        readout_format=".2f",
    )
    slider.add_class("coremtl-alpha")
    content.add_class("coremtl-content")
    donor.add_class("coremtl-donor")
    images = {name: W.Image(format="png", width=size, height=size) for name in PANELS}
    images["decoded"].add_class("coremtl-decoded")
    titles = {
        "content": "content x_A",
        "donor": "donor x_B",
        "decoded": "model D(z_s, z_p(α))",
        "true": "true render(s_A, r(α))",
        "segmentation": "seg. on decoded",
        "depth": "depth on decoded",
        "normal": "normals on decoded",
    }
    status = W.HTML()
    status.add_class("coremtl-status")

    def box(name: str):
        title = W.HTML(f"<b>{titles[name]}</b>", layout=W.Layout(width=f"{size + 8}px"))
        return W.VBox([title, images[name]])

    def update(*_):
        view = swap_view(model, scenes, content.value, donor.value, slider.value)
        for name in PANELS:
            arr = view.get(name)
            if arr is None:
                arr = np.full((size, size, 3), 235, dtype=np.uint8)
            images[name].value = png_bytes(enlarge(arr, size))
        err = "n/a" if view["l1_true"] is None else f"{view['l1_true']:.4f}"
        status.value = (
            f"α = {view['alpha']:.2f} &nbsp; ||z_p(α) - z_p(A)|| = {view['zp_shift']:.3f} &nbsp; "
            f"L1(model, true) = {err}"
        )
        ui.view = view

    ui = W.VBox(
        [
            W.HBox([content, donor, slider]),
            status,
            W.HBox([box("content"), box("donor"), box("decoded"), box("true")]),
            W.HBox([box("segmentation"), box("depth"), box("normal")]),
        ]
    )
    ui.add_class("coremtl-swap")
    ui.controls = (content, donor, slider)
    for ctrl in ui.controls:
        ctrl.observe(update, names="value")
    update()
    return ui
