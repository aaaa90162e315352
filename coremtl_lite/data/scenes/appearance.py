"""Appearance of a ShadedScenes scene: residual factors ``r`` -> image, given the geometry.

The image formation is CORE-MTL's physics decoder run forwards (paper Eq. 13-14,
:mod:`coremtl_lite.shading`):

    x = sRGB(clip(exposure * A ⊙ S(N, L) + noise)),       S_c(n) = max(0, sum_k L[c,k] Y_k(n))

with the albedo ``A`` (a per-surface colour times a procedural texture), the order-2 SH lighting
``L`` (a directional light plus ambient, tinted by a colour temperature), the exposure and the
sensor noise all residual factors. Nothing here reads the labels' semantic factors: only the
geometry's visible surface, normals and texture coordinates.
"""

from __future__ import annotations

import math

import torch

from coremtl_lite.data import _random
from coremtl_lite.data.corruptions import corrupt
from coremtl_lite.data.scenes.geometry import NUM_SURFACES
from coremtl_lite.shading import SH_C0, linear_to_srgb, sh_basis, sh_shading, srgb_to_linear

RESIDUAL_KEYS = (
    "albedo",
    "texture_kind",
    "texture_freq",
    "texture_angle",
    "texture_phase",
    "texture_amp",
    "light_dir",
    "light_temperature",
    "light_intensity",
    "ambient",
    "exposure",
    "noise_std",
    "noise_seed",
)
TEXTURE_KINDS = ("stripes", "checker", "blotches")

#: scenes are shaded in chunks of about this many pixels (see :func:`shade`)
SHADE_CHUNK_PIXELS = 1 << 17

NOISE_BANK_SIZE = 64
_NOISE_BANKS: dict[tuple[int, int], torch.Tensor] = {}


def hsv_to_rgb(h: torch.Tensor, s: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Vectorised HSV -> RGB (all in [0, 1]); the result has a trailing channel dim of 3."""
    k = torch.tensor([5.0, 3.0, 1.0])
    kk = (k + h[..., None] * 6.0) % 6.0
    return v[..., None] - v[..., None] * s[..., None] * (torch.minimum(kk, 4.0 - kk).clamp(0.0, 1.0))


def rgb_to_hsv(rgb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Vectorised RGB -> (hue, saturation, value), the inverse of :func:`hsv_to_rgb` (trailing dim 3)."""
    mx, mn = rgb.max(-1).values, rgb.min(-1).values
    delta = (mx - mn).clamp_min(1e-8)
    r, g, b = rgb.unbind(-1)
    hue = torch.where(
        mx == r, ((g - b) / delta) % 6, torch.where(mx == g, (b - r) / delta + 2, (r - g) / delta + 4)
    )
    hue = torch.where(mx - mn < 1e-8, torch.zeros_like(hue), hue) / 6.0
    sat = torch.where(mx > 0, (mx - mn) / mx.clamp_min(1e-8), torch.zeros_like(mx))
    return hue, sat, mx


def light_direction(azimuth: torch.Tensor, elevation: torch.Tensor) -> torch.Tensor:
    """Unit direction towards the light from azimuth (from +x, counter-clockwise) and elevation (rad)."""
    azimuth = torch.as_tensor(azimuth, dtype=torch.float32)
    elevation = torch.as_tensor(elevation, dtype=torch.float32)
    ce = torch.cos(elevation)
    return torch.stack([ce * torch.cos(azimuth), ce * torch.sin(azimuth), torch.sin(elevation)], -1)


def temperature_tint(kelvin: torch.Tensor) -> torch.Tensor:
    """Linear-RGB tint of a light of colour temperature ``kelvin`` (``(..., 3)``, channel mean 1).

    A smooth approximation of the Planckian locus between 3000 K (warm, reddish) and 10000 K (cool,
    bluish), with 6500 K (D65) white.
    """
    t = ((torch.as_tensor(kelvin, dtype=torch.float32) - 6500.0) / 3500.0).clamp(-1.0, 1.0)
    rgb = torch.stack([1.0 - 0.25 * t, 1.0 - 0.05 * t.abs(), 1.0 + 0.35 * t], -1)
    return rgb / rgb.mean(-1, keepdim=True)


def lighting_sh(residual: dict[str, torch.Tensor]) -> torch.Tensor:
    """The 27 SH lighting coefficients ``(B, 3, 9)`` built from the residual lighting factors.

    A directional light of strength ``I`` from ``d``, convolved with the clamped cosine (Ramamoorthi &
    Hanrahan 2001, Eq. 7-8: band weights pi, 2pi/3, pi/4), plus an ambient term ``a`` on
    Y_00, tinted by the colour temperature: ``S(n) ~= tint * (I max(0, n.d) + a)``.
    """
    d = residual["light_dir"]
    d = d / d.norm(dim=-1, keepdim=True).clamp_min(1e-8)
    a0, a1, a2 = math.pi, 2.0 * math.pi / 3.0, math.pi / 4.0
    band = torch.tensor([a0, a1, a1, a1, a2, a2, a2, a2, a2])
    coeff = residual["light_intensity"][:, None] * band * sh_basis(d, dim=-1)  # (B, 9)
    coeff = coeff.clone()
    coeff[:, 0] += residual["ambient"] / SH_C0  # Y_00 = SH_C0: a constant irradiance a
    tint = temperature_tint(residual["light_temperature"])  # (B, 3)
    return tint[:, :, None] * coeff[:, None, :]


def shift_hue(albedo_linear: torch.Tensor, shift: float) -> torch.Tensor:
    """Rotate hues of linear-RGB colours by ``shift`` (fraction of a turn) in sRGB HSV space."""
    hue, sat, val = rgb_to_hsv(linear_to_srgb(albedo_linear))
    return srgb_to_linear(hsv_to_rgb((hue + shift) % 1.0, sat, val))


def texture(
    kind: torch.Tensor,
    kinds_present: torch.Tensor,
    freq: torch.Tensor,
    cos_phi: torch.Tensor,
    sin_phi: torch.Tensor,
    phase: torch.Tensor,
    tu: torch.Tensor,
    tv: torch.Tensor,
) -> torch.Tensor:
    """Procedural texture in [0, 1]: stripes (0), soft checker (1) or blotches (2), per pixel ``kind``.

    ``freq`` is the angular frequency, ``cos_phi, sin_phi`` the cosine and sine of the texture angle
    and ``phase`` its phase at each pixel; ``tu, tv`` are the pixel's texture coordinates.
    """
    present = set(torch.unique(kinds_present).tolist())
    tex = torch.zeros_like(tu)
    if present & {0, 2}:
        a1 = torch.sin(freq * (cos_phi * tu + sin_phi * tv) + phase)
        if 0 in present:
            tex = torch.where(kind == 0, 0.5 + 0.5 * a1, tex)
        if 2 in present:
            a2 = torch.sin(1.3 * freq * (cos_phi * tv - sin_phi * tu) + 0.5 * phase)
            tex = torch.where(kind == 2, 0.5 + 0.25 * (a1 + a2), tex)
    if 1 in present:
        checker = 0.5 + 0.5 * torch.tanh(3.0 * torch.sin(freq * tu + phase) * torch.sin(freq * tv + phase))
        tex = torch.where(kind == 1, checker, tex)
    return tex


def noise_fields(noise_seed: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Unit Gaussian sensor-noise fields ``(B, 3, H, W)``, a deterministic function of ``noise_seed``.

    Field ``b`` is one of :data:`NOISE_BANK_SIZE` fixed white-noise images (drawn once per image size
    from a fixed seed), circularly shifted and sign-flipped by bits of ``noise_seed[b]``: white noise
    either way, at a fraction of the cost of a fresh draw per scene. The bank is kept tiled 2 x 2, so a
    circular shift is a plain ``H x W`` slice of it.
    """
    bank = _NOISE_BANKS.get((height, width))
    if bank is None:
        gen = torch.Generator()
        gen.manual_seed(height * 100003 + width)
        fresh = torch.randn(NOISE_BANK_SIZE, 3, height, width, generator=gen)
        bank = _NOISE_BANKS.setdefault((height, width), fresh.repeat(1, 1, 2, 2))
    key = _random.hash32(noise_seed.long())
    idx = key % NOISE_BANK_SIZE
    di, dj = (key >> 6) % height, (key >> 16) % width
    sign = 1.0 - 2.0 * ((key >> 31) & 1).float()
    if not len(key):
        return torch.empty(0, 3, height, width)
    # one contiguous H x W slice per scene (measured: faster than a single element-wise gather)
    out = torch.stack(
        [bank[k, :, i : i + height, j : j + width] for k, i, j in zip(idx.tolist(), di.tolist(), dj.tolist())]
    )
    return out * sign[:, None, None, None]


def check_residual(residual: dict[str, torch.Tensor]) -> None:
    """Residual factors must have every key of :data:`RESIDUAL_KEYS`."""
    missing = [k for k in RESIDUAL_KEYS if k not in residual]
    if missing:
        raise KeyError(f"residual factors are missing keys {missing}")


def shade(
    geometry: dict[str, torch.Tensor],
    residual: dict[str, torch.Tensor],
    corruption: tuple[str, int] | None = None,
    keys: tuple[str, ...] = ("image", "albedo", "shading", "sh"),
) -> dict[str, torch.Tensor]:
    """Image formation from geometry and residual factors (paper Eq. 13-14), then an optional
    ``corruption`` ``(name, severity)`` of :mod:`coremtl_lite.data.corruptions`.

    Returns ``image`` (sRGB in [0, 1]), the linear-RGB intermediates ``albedo`` and ``shading``,
    and the SH lighting ``sh`` (only the entries named in ``keys``).

    Large batches are shaded in chunks of :data:`SHADE_CHUNK_PIXELS` pixels' worth of scenes: every
    scene is shaded on its own either way, but small intermediates stay in cache.
    """
    check_residual(residual)
    b, hh, ww = geometry["surface"].shape
    sh = lighting_sh(residual)  # (B, 3, 9): row by row, so computed once for every chunk
    per = max(1, SHADE_CHUNK_PIXELS // (hh * ww))
    if b <= per or (hh * ww) % 64:
        out = _shade(geometry, residual, sh, corruption)
        return {k: out[k] for k in keys}
    parts = []
    for lo in range(0, b, per):
        part = _shade(
            {k: v[lo : lo + per] for k, v in geometry.items()},
            {k: v[lo : lo + per] for k, v in residual.items()},
            sh[lo : lo + per],
            corruption,
        )
        parts.append({k: part[k] for k in keys})
    return {k: torch.cat([p[k] for p in parts]) for k in keys}


def _shade(
    geometry: dict[str, torch.Tensor],
    residual: dict[str, torch.Tensor],
    sh: torch.Tensor,
    corruption: tuple[str, int] | None,
) -> dict[str, torch.Tensor]:
    """:func:`shade` of one chunk of scenes (all outputs), given their SH lighting ``sh``."""
    surface = geometry["surface"]
    b, hh, ww = surface.shape
    # the per-surface tables (B, 6) read at every pixel's visible surface: one flat index for all of
    # them, and the float tables stacked, so that one gather reads all nine at every pixel
    flat = (surface.view(b, -1) + NUM_SURFACES * torch.arange(b)[:, None]).view(-1)
    angle = residual["texture_angle"].float()
    amp = residual["texture_amp"].float()
    tables = [
        *residual["albedo"].float().unbind(-1),  # 0-2: the colour
        residual["texture_freq"].float() * math.pi,  # 3-6: the texture's frequency, angle and phase
        torch.cos(angle),
        torch.sin(angle),
        residual["texture_phase"].float(),
        amp,  # 7-8: its amplitude
        1.0 - amp,
    ]
    px = torch.stack(tables, -1).view(-1, len(tables)).index_select(0, flat)  # (B * H * W, 9)
    px = px.view(b, hh * ww, len(tables)).transpose(1, 2).contiguous().view(b, len(tables), hh, ww)
    kind = residual["texture_kind"].long().reshape(-1).index_select(0, flat).view(b, hh, ww)
    tex = texture(
        kind,
        residual["texture_kind"],
        px[:, 3],
        px[:, 4],
        px[:, 5],
        px[:, 6],
        geometry["tex_uv"][:, 0],
        geometry["tex_uv"][:, 1],
    )
    albedo = px[:, 0:3] * (px[:, 8] + px[:, 7] * tex)[:, None]
    shading = sh_shading(geometry["normal"], sh)  # Eq. 14
    linear = residual["exposure"].float()[:, None, None, None] * albedo * shading  # Eq. 13
    if (residual["noise_std"] > 0).any():
        eps = noise_fields(residual["noise_seed"].long(), hh, ww)
        linear = linear + residual["noise_std"].float()[:, None, None, None] * eps
    image = linear_to_srgb(linear)  # sRGB(clip(.))
    if corruption is not None:
        image = corrupt(
            image,
            corruption[0],
            corruption[1],
            seeds=_random.hash32(residual["noise_seed"].long() ^ 0x165667B1),
        )
    return {"image": image, "albedo": albedo, "shading": shading, "sh": sh}
