"""The residual-swap widget's logic (swap_view) without a browser, and the shared viz helpers."""

import io

import numpy as np
import pytest
import torch
from test_diagnostics import SIZE, ToyDual, ToyVanilla

from coremtl_lite import viz
from coremtl_lite.data import ShadedScenes
from coremtl_lite.widgets import enlarge, residual_swap_widget, swap_view


@pytest.fixture(scope="module")
def scenes():
    return ShadedScenes("source", size=SIZE, length=16, seed=1)


# ------------------------------------------------------------------------------------------- viz
def _decode_png(data: bytes) -> np.ndarray:
    """PNG bytes -> (H, W, 3) uint8, by Pillow's decoder (8-bit RGB expected)."""
    from PIL import Image

    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    img = Image.open(io.BytesIO(data))
    assert img.mode == "RGB", f"expected 8-bit RGB, got {img.mode}"
    return np.asarray(img)


def test_png_round_trip():
    rgb = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    data = viz.png_bytes(rgb)
    np.testing.assert_array_equal(_decode_png(data), rgb)
    # float (3, H, W) input goes through to_uint8_image
    img = torch.zeros(3, 2, 2)
    img[0] = 1.0
    np.testing.assert_array_equal(_decode_png(viz.png_bytes(img))[..., 0], 255)


def test_colour_maps():
    seg = torch.tensor([[0, 1], [-1, 2]])
    rgb = viz.segmentation_to_rgb(seg)
    assert rgb.shape == (2, 2, 3) and (rgb[1, 0] == 0).all()
    np.testing.assert_array_equal(rgb[0, 1], viz.SEGMENTATION_PALETTE[1])
    logits = torch.zeros(3, 2, 2)
    logits[2] = 1.0
    assert (viz.segmentation_to_rgb(logits) == viz.SEGMENTATION_PALETTE[2]).all()
    depth = torch.tensor([[[1.0, 2.0], [0.0, 3.0]]])
    d = viz.depth_to_rgb(depth)
    assert (d[1, 0] == 0).all() and not (d[0, 0] == d[1, 1]).all()
    np.testing.assert_array_equal(d[0, 0], [253, 231, 37])  # nearest valid depth -> brightest
    n = torch.zeros(3, 1, 2)
    n[2, 0, 0] = 1.0
    nr = viz.normal_to_rgb(n)
    np.testing.assert_array_equal(nr[0, 0], [128, 128, 255])
    assert (nr[0, 1] == 0).all()
    with pytest.raises(ValueError, match="task kind"):
        viz.prediction_to_rgb("attributes", torch.zeros(3))


def test_to_uint8_and_figures():
    img = torch.rand(2, 3, 4, 4)
    assert viz.to_uint8_image(img[0]).shape == (4, 4, 3)
    fig = viz.image_grid(img, ["a", "b"], cols=2)
    assert len(fig.data) == 2 and fig.data[0].type == "image"
    hm = viz.heatmap(np.eye(3), ["x", "y", "z"])
    np.testing.assert_array_equal(np.asarray(hm.data[0].z), np.eye(3))
    lp = viz.line_plot([0, 1], {"a": [0.1, 0.2]}, hline=0.0)
    assert list(lp.data[0].y) == [0.1, 0.2]
    with pytest.raises(ValueError, match="RGB"):
        viz.to_uint8_image(np.zeros((4, 4, 5)))


# ---------------------------------------------------------------------------------------- widget
def test_enlarge():
    a = np.arange(12, dtype=np.uint8).reshape(2, 2, 3)
    big = enlarge(a, 5)
    assert big.shape == (6, 6, 3) and (big[:3, :3] == a[0, 0]).all()


def test_swap_view_endpoints_and_truth(scenes):
    model = ToyDual()
    v0 = swap_view(model, scenes, 2, 5, 0.0)
    v1 = swap_view(model, scenes, 2, 5, 1.0)
    vh = swap_view(model, scenes, 2, 5, 0.5)
    batch = scenes.get_batch([2, 5])
    out = model(batch["image"])
    own = model.decode(out["z_s"][:1], out["z_p"][:1])["recon"][0]
    np.testing.assert_array_equal(v0["decoded"], viz.to_uint8_image(own))
    swapped = model.decode(out["z_s"][:1], out["z_p"][1:2])["recon"][0]
    np.testing.assert_array_equal(v1["decoded"], viz.to_uint8_image(swapped))
    assert v0["zp_shift"] == 0.0 and v1["zp_shift"] > vh["zp_shift"] > 0
    # the true counterfactual: alpha 0 is the content image itself, alpha 1 changes it
    assert np.abs(v0["true"].astype(int) - viz.to_uint8_image(batch["image"][0]).astype(int)).max() <= 1
    assert np.abs(v1["true"].astype(int) - v0["true"].astype(int)).mean() > 2
    np.testing.assert_array_equal(v1["content"], v0["content"])
    for task in ("segmentation", "depth", "normal"):
        assert v1[task].shape == (SIZE, SIZE, 3) and v1["labels"][task].shape == (SIZE, SIZE, 3)
    np.testing.assert_array_equal(
        v1["labels"]["segmentation"], viz.segmentation_to_rgb(batch["segmentation"][0])
    )
    assert 0 <= v1["l1_true"] <= 1
    with pytest.raises(ValueError, match="alpha"):
        swap_view(model, scenes, 0, 1, 1.5)
    with pytest.raises(TypeError, match="dual-stream"):
        swap_view(ToyVanilla(), scenes, 0, 1, 0.5)


def test_widget_updates_its_images(scenes):
    pytest.importorskip("ipywidgets")
    ui = residual_swap_widget(ToyDual(), scenes, indices=range(4), size=32)
    content, donor, slider = ui.controls
    decoded = ui.children[2].children[2].children[1]
    before = decoded.value
    assert before[:4] == b"\x89PNG" and ui.view["alpha"] == 0.0
    slider.value = 1.0
    assert ui.view["alpha"] == 1.0 and decoded.value != before
    after_slider = decoded.value
    donor.value = 3
    assert decoded.value != after_slider
    assert "L1(model, true)" in ui.children[1].value
