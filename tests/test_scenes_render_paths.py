"""The fast rendering paths equal their plain definitions, bit for bit.

* :func:`~coremtl_lite.data.scenes.geometry.geometry` (candidate discs, one scatter-max of packed
  visibility keys) against a dense per-scene reference that evaluates every object on every pixel and
  keeps the highest surface;
* the visibility keys order heights like floats, and their packed height reads back exactly;
* defocus blur (zero rings cropped, channels-last) against the full-kernel depthwise convolution.
"""

import pytest
import torch
import torch.nn.functional as F

from coremtl_lite.data import ShadedScenes
from coremtl_lite.data.corruptions import DEFOCUS_BLUR, defocus_blur, disk_kernel
from coremtl_lite.data.scenes import geometry as G


def _dense_reference(semantic: dict[str, torch.Tensor], n: int) -> dict[str, torch.Tensor]:
    """The labels by the definition: scene by scene, object by object, on every pixel of the image."""
    step = 2.0 / n
    vis = -1.0 + (torch.arange(n, dtype=torch.float32) + 0.5) * step
    x, y = vis[None, :].expand(n, n).reshape(-1), (-vis)[:, None].expand(n, n).reshape(-1)
    out = {k: [] for k in ("surface", "depth", "gx", "gy", "tu", "tv")}
    for b in range(semantic["valid"].shape[0]):
        tilt, c0, waves = (semantic[key][b] for key in ("ground_tilt", "ground_height", "ground_waves"))
        best, gx, gy = G.ground_surface(tilt, c0, waves, x, y)  # the rolling ground on every pixel
        surface = torch.full((n * n,), G.GROUND)
        tu, tv = x.clone(), y.clone()
        for k in range(G.MAX_OBJECTS):  # ascending slots with >=: a tie between objects goes to the last
            if not semantic["valid"][b, k]:
                continue
            px, py = semantic["position"][b, k]
            r, h, a = (semantic[key][b, k : k + 1] for key in ("size", "height", "angle"))
            dx, dy = x - px, y - py
            hs, ogx, ogy = G._shape_surface(
                int(semantic["shape"][b, k]), dx, dy, r, h, a, obj=torch.zeros(n * n, dtype=torch.long)
            )
            z = G.ground_surface(tilt, c0, waves, px, py)[0] + hs  # the object rests on the ground
            ground = surface == G.GROUND
            win = torch.where(ground, z > best, z >= best) & (z > -torch.inf)
            best, surface = torch.where(win, z, best), torch.where(win, k, surface)
            gx, gy = torch.where(win, ogx, gx), torch.where(win, ogy, gy)
            c, s = torch.cos(a), torch.sin(a)
            tu, tv = torch.where(win, c * dx + s * dy, tu), torch.where(win, -s * dx + c * dy, tv)
        for key, v in (("surface", surface), ("depth", G.CAMERA_HEIGHT - best)):
            out[key].append(v.view(n, n))
        for key, v in (("gx", gx), ("gy", gy), ("tu", tu), ("tv", tv)):
            out[key].append(v.view(n, n))
    return {k: torch.stack(v) for k, v in out.items()}


@pytest.mark.parametrize("n", [16, 37, 64])
def test_geometry_equals_the_dense_per_pixel_definition(n):
    semantic = ShadedScenes(size=n, length=24, seed=11).sample_semantic(range(24))
    fast, ref = G.geometry(semantic, n), _dense_reference(semantic, n)
    assert torch.equal(fast["surface"], ref["surface"])
    assert torch.equal(fast["depth"][:, 0], ref["depth"])
    assert torch.equal(fast["tex_uv"], torch.stack([ref["tu"], ref["tv"]], 1))
    inv = torch.rsqrt(ref["gx"] * ref["gx"] + ref["gy"] * ref["gy"] + 1.0)
    assert torch.equal(fast["normal"], torch.stack([-ref["gx"] * inv, -ref["gy"] * inv, inv], 1))
    assert (fast["surface"] != G.GROUND).any() and (fast["surface"] == G.GROUND).any()


def test_visibility_keys_order_like_height_then_surface():
    z = torch.tensor([-torch.inf, -3.5, -1e-30, -0.0, 0.0, 1e-30, 0.25, 0.25, 2.0, 2.0, 2.0])
    surface = torch.tensor([0, 1, 2, 3, 1, 0, 4, 5, 0, 4, 5])
    keys = G._visibility_key(z, surface, torch.arange(len(z)))
    ranked = sorted(range(len(z)), key=lambda i: (float(z[i]), int(surface[i])))
    assert torch.equal(keys.argsort(), torch.tensor(ranked))
    assert torch.equal(G._key_height(keys), z)  # -0.0 reads back as 0.0: an equal height
    assert keys[3] >> G._HEIGHT_SHIFT == keys[4] >> G._HEIGHT_SHIFT  # -0.0 and 0.0 share one height key
    assert torch.equal(keys & G._CANDIDATE_MASK, torch.arange(len(z)))


@pytest.mark.parametrize("severity", [1, 3, 5])
def test_defocus_blur_equals_the_full_kernel_convolution(severity):
    x = torch.rand(5, 3, 40, 36, generator=torch.Generator().manual_seed(severity))
    kernel = disk_kernel(*DEFOCUS_BLUR[severity - 1])
    k = kernel.shape[-1]
    padded = F.pad(x, (k // 2,) * 4, mode="reflect")
    ref = F.conv2d(padded, kernel.expand(3, 1, k, k), groups=3).clamp(0.0, 1.0)
    out = defocus_blur(x, severity)
    assert torch.equal(out, ref) and out.is_contiguous()
    assert torch.equal(defocus_blur(x[2], severity), ref[2])
