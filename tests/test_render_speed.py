"""The ShadedScenes renderer's behaviour, pinned: known answers, invariances, determinism by seed; the
rendering benchmark script runs.

(The v1 renderer's bit-identity reference is gone: the v2 scenes are other scenes -- larger objects,
the priors table -- so these tests pin what the renderer must do rather than one earlier version.)
"""

import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from coremtl_lite.data import ShadedScenes
from coremtl_lite.data.corruptions import plasma_fractal, plasma_fractals
from coremtl_lite.data.scenes import CAMERA_HEIGHT, MAX_OBJECTS, noise_fields
from coremtl_lite.data.scenes.geometry import CYLINDER_RADIUS, PYRAMID_INRADIUS, geometry
from coremtl_lite.shading import linear_to_srgb, sh_basis

ROOT = Path(__file__).resolve().parents[1]


def _scene(objects, tilt=(0.0, 0.0), z0=0.0, waves=((0.0, 0.0, 0.0), (0.0, 0.0, 0.0))):
    """Semantic factors of one scene from ``[(shape_id, x, y, size, height, angle), ...]`` (a flat
    ground unless ``waves`` gives the ground's ``(direction, omega, phase)`` per wave)."""
    valid = torch.zeros(1, MAX_OBJECTS, dtype=torch.bool)
    shape = torch.full((1, MAX_OBJECTS), -1)
    pos, size, height, angle = (
        torch.zeros(1, MAX_OBJECTS, 2),
        torch.zeros(1, MAX_OBJECTS),
        torch.zeros(1, MAX_OBJECTS),
        torch.zeros(1, MAX_OBJECTS),
    )
    for k, (sid, x, y, r, h, a) in enumerate(objects):
        valid[0, k], shape[0, k] = True, sid
        pos[0, k], size[0, k], height[0, k], angle[0, k] = torch.tensor([x, y]), r, h, a
    return {
        "num_objects": valid.sum(1),
        "valid": valid,
        "shape": shape,
        "position": pos,
        "size": size,
        "height": height,
        "angle": angle,
        "ground_tilt": torch.tensor([tilt]),
        "ground_height": torch.tensor([z0]),
        "ground_waves": torch.tensor([waves]),
    }


def _pixel_grid(n):
    c = -1.0 + (torch.arange(n, dtype=torch.float32) + 0.5) * (2.0 / n)
    return c[None, :].expand(n, n), (-c)[:, None].expand(n, n)  # x (columns), y (rows, up)


def test_known_answer_hemisphere_on_a_flat_ground():
    n, r, h = 64, 0.4, 0.5
    g = geometry(_scene([(0, 0.0, 0.0, r, h, 0.0)]), n)
    x, y = _pixel_grid(n)
    q = (x * x + y * y) / (r * r)
    inside = q < 1.0
    assert torch.equal(g["segmentation"][0], torch.where(inside, 1, 0))
    z = torch.where(inside, h * (1.0 - q).clamp_min(1e-4).sqrt(), 0.0)
    assert torch.allclose(g["depth"][0, 0], CAMERA_HEIGHT - z, atol=1e-5)
    centre = g["normal"][0, :, n // 2 - 1 : n // 2 + 1, n // 2 - 1 : n // 2 + 1]
    assert (centre[2] > 0.99).all()  # the top faces the camera
    ground = g["normal"][0][:, ~inside]
    assert torch.equal(ground, torch.tensor([0.0, 0.0, 1.0])[:, None].expand_as(ground))
    # on the rim the normal tilts outwards: n_x has the sign of x
    rim = inside & (q > 0.5)
    assert (torch.sign(g["normal"][0, 0][rim]) == torch.sign(x[rim])).float().mean() > 0.99


def test_known_answer_box_lying_cylinder_occlusion_and_tilted_ground():
    n = 48
    # a tall cylinder lying along x over a low box: the higher surface is the visible one where they overlap
    g = geometry(
        _scene([(3, -0.2, 0.0, 0.4, 0.1, 0.0), (2, 0.2, 0.0, 0.4, 0.6, 0.0)], tilt=(0.1, -0.05), z0=0.02), n
    )
    x, y = _pixel_grid(n)
    box = (x + 0.2).abs().lt(0.32) & y.abs().lt(0.32)
    w = CYLINDER_RADIUS * 0.4
    cyl = (x - 0.2).abs().lt(0.4) & y.abs().lt(w)
    core = (x - 0.2).abs().lt(0.35) & y.abs().lt(0.7 * w)  # where the tube is clearly above the box
    seg = g["segmentation"][0]
    assert torch.equal(seg[core], torch.full_like(seg[core], 3))  # class 3 = cylinder (shape 2 + 1)
    assert torch.equal(seg[box & ~cyl], torch.full_like(seg[box & ~cyl], 4))  # box (shape 3 + 1)
    ground = ~box & ~cyl
    assert (seg[ground] == 0).all()
    plane = 0.1 * x - 0.05 * y + 0.02
    assert torch.allclose(g["depth"][0, 0][ground], CAMERA_HEIGHT - plane[ground], atol=1e-5)
    # the tube's height H sqrt(1 - y^2 / w^2) above the plane at its centre; its normal tilts across it
    tube = 0.6 * (1 - (y / w) ** 2).clamp_min(1e-4).sqrt() + (0.1 * 0.2 + 0.02)
    assert torch.allclose(g["depth"][0, 0][core], CAMERA_HEIGHT - tube[core], atol=1e-5)
    assert (g["normal"][0, 0][core].abs() < 1e-6).all()  # no slope along its axis
    assert (
        torch.sign(g["normal"][0, 1][core & (y.abs() > 0.02)]) == torch.sign(y[core & (y.abs() > 0.02)])
    ).all()
    nz = 1.0 / math.sqrt(1 + 0.1**2 + 0.05**2)
    expect = torch.tensor([-0.1 * nz, 0.05 * nz, nz])
    assert torch.allclose(g["normal"][0][:, ground], expect[:, None], atol=1e-6)


def test_known_answer_three_sided_pyramid():
    n, r, h = 64, 0.5, 0.6
    g = geometry(_scene([(4, 0.0, 0.0, r, h, 0.0)]), n)
    x, y = _pixel_grid(n)
    a = PYRAMID_INRADIUS * r
    facets = torch.tensor([[math.cos(t), math.sin(t)] for t in (0.0, 2 * math.pi / 3, 4 * math.pi / 3)])
    m = torch.stack([f[0] * x + f[1] * y for f in facets]).max(0).values
    inside = m < a
    assert torch.equal(g["segmentation"][0], torch.where(inside, 5, 0))  # class 5 = pyramid
    assert torch.allclose(
        g["depth"][0, 0], CAMERA_HEIGHT - torch.where(inside, h * (1 - m / a), 0.0), atol=1e-5
    )
    # the facet facing +x has the gradient -H/a (1, 0): normal (H/a, 0, 1) / norm
    east = inside & (x > 0.1) & (y.abs() < 0.02)
    expect = torch.tensor([h / a, 0.0, 1.0]) / math.hypot(h / a, 1.0)
    assert torch.allclose(g["normal"][0][:, east], expect[:, None], atol=1e-5)


def test_rolling_ground_normals_follow_its_depth():
    """The ground's analytic normal agrees with the finite differences of its depth label."""
    n = 128
    g = geometry(_scene([], tilt=(0.02, -0.01), waves=((0.3, 3.0, 1.0), (2.0, 4.0, 0.5))), n)
    z = CAMERA_HEIGHT - g["depth"][0, 0]
    step = 2.0 / n
    dzdx = (z[1:-1, 2:] - z[1:-1, :-2]) / (2 * step)
    dzdy = -(z[2:, 1:-1] - z[:-2, 1:-1]) / (2 * step)  # rows run down, y runs up
    nrm = torch.stack([-dzdx, -dzdy, torch.ones_like(dzdx)])
    nrm = nrm / nrm.norm(dim=0, keepdim=True)
    assert torch.allclose(g["normal"][0][:, 1:-1, 1:-1], nrm, atol=2e-3)
    tilt_deg = torch.rad2deg(torch.acos(g["normal"][0, 2].clamp(max=1.0)))
    assert tilt_deg.max() > 10.0  # the waves are visible: the ground is not flat


def test_mirroring_the_semantic_factors_mirrors_the_labels():
    ds = ShadedScenes(size=32, length=64, seed=4)
    s = ds.sample_semantic(range(64))
    m = dict(s)
    m["position"] = s["position"] * torch.tensor([-1.0, 1.0])
    # x -> -x maps an object at angle t to one at pi - t (every shape's footprint is symmetric about
    # its own u axis) and a wave of direction t to one of direction pi - t
    m["angle"] = torch.where(s["valid"], math.pi - s["angle"], 0.0)
    m["ground_tilt"] = s["ground_tilt"] * torch.tensor([-1.0, 1.0])
    m["ground_waves"] = s["ground_waves"].clone()
    m["ground_waves"][..., 0] = math.pi - s["ground_waves"][..., 0]
    a, b = ds.geometry(s), ds.geometry(m)
    same = a["segmentation"].flip(-1) == b["segmentation"]
    assert same.float().mean() > 0.995  # up to pixels on a footprint's edge
    assert torch.allclose(a["depth"].flip(-1)[same[:, None]], b["depth"][same[:, None]], atol=1e-4)
    nx = (-a["normal"][:, 0].flip(-1) - b["normal"][:, 0])[same]
    assert nx.abs().median() < 1e-4


def test_known_answer_image_of_a_plain_ground():
    ds = ShadedScenes(size=16, length=1, seed=0)
    f = ds.sample_factors([0])
    sem = _scene([])
    r = ds.intervene(
        f["residual"],
        texture_amp=0.0,
        noise_std=0.0,
        exposure=1.0,
        light_temperature=6500.0,
        light_azimuth=0.0,
        light_elevation=math.pi / 2,
    )
    img = ds.render(sem, r)["image"][0]
    # a flat ground under white light: S = sum_k L_k Y_k((0, 0, 1)), the same in every pixel
    shading = (r["sh"][0] * sh_basis(torch.tensor([0.0, 0.0, 1.0]), dim=-1)).sum(-1).clamp_min(0.0)
    expect = linear_to_srgb(r["albedo"][0, -1] * shading)
    assert torch.allclose(img, expect[:, None, None].expand_as(img), atol=1e-6)
    # the exposure scales the linear image (Eq. 13)
    for e in (0.5, 0.8):
        img_e = ds.render(sem, ds.intervene(r, exposure=e))["image"][0]
        assert torch.allclose(
            img_e, linear_to_srgb(e * r["albedo"][0, -1] * shading)[:, None, None].expand_as(img_e), atol=1e-6
        )


@pytest.mark.parametrize("domain", ["source", "target", "shift:0.5", "colored", "corrupt:fog:3"])
def test_scenes_are_a_function_of_seed_and_index(domain):
    a = ShadedScenes(domain=domain, size=32, length=50, seed=7, offset=3).get_batch([0, 9, 21])
    b = ShadedScenes(domain=domain, size=32, length=50, seed=7, offset=3).get_batch([0, 9, 21])
    for key in ("image", "segmentation", "depth", "normal"):
        assert torch.equal(a[key], b[key]), key
    c = ShadedScenes(domain=domain, size=32, length=50, seed=8, offset=3).get_batch([0, 9, 21])
    assert not torch.equal(a["segmentation"], c["segmentation"]) and not torch.equal(a["image"], c["image"])
    # the same global index through another offset is the same scene
    d = ShadedScenes(domain=domain, size=32, length=50, seed=7, offset=0).get_batch([12])
    assert torch.equal(d["segmentation"][0], a["segmentation"][1])
    assert torch.allclose(d["image"][0], a["image"][1], atol=1e-6)


def test_every_shape_count_and_edge_case_occurs():
    s = ShadedScenes(size=21, length=400, seed=7).sample_semantic(range(400))  # odd size: windows clip
    assert set(s["shape"][s["valid"]].tolist()) == set(range(6))
    assert set(s["num_objects"].tolist()) == set(range(1, MAX_OBJECTS + 1))
    g = ShadedScenes(size=21, length=400, seed=7).geometry(s)
    assert (g["depth"] > 0).all() and torch.allclose(g["normal"].norm(dim=1), torch.ones(()), atol=1e-5)


def test_noise_fields_are_deterministic_white_noise():
    seeds = torch.arange(40) * 7919 + 5
    a = noise_fields(seeds, 24, 20)
    assert torch.equal(a, noise_fields(seeds, 24, 20)) and a.shape == (40, 3, 24, 20)
    assert abs(float(a.mean())) < 0.02 and abs(float(a.std()) - 1.0) < 0.02
    assert not torch.equal(a[0], a[1])
    assert noise_fields(seeds[:0], 8, 8).shape == (0, 3, 8, 8)
    gens = [torch.Generator().manual_seed(s) for s in (3, 4)]
    for s, m in zip((3, 4), plasma_fractals(32, 1.7, gens)):  # the batched fog maps are the single ones
        assert torch.equal(m, plasma_fractal(32, 1.7, torch.Generator().manual_seed(s)))


def test_bench_render_script_runs():
    out = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "bench_render.py"),
            "--threads",
            "1",
            "--batch",
            "8",
            "--repeats",
            "1",
            "--sizes",
            "16",
            "64",
            "--domains",
            "source",
            "corrupt:fog:1",
            "--fill",
            "128",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    ).stdout
    assert "16x16" in out and "corrupt:fog:1" in out
    assert "goal >= 5000" in out and "goal >= 2000" in out
    assert "render-once cache fill (128 scenes in 64-scene chunks)" in out and "x)" in out
