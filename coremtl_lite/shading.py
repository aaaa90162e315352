"""Rendering physics shared by the ShadedScenes renderer and the hard-grounding decoder.

Second-order spherical-harmonic (SH) irradiance (Ramamoorthi & Hanrahan 2001), the shading model of
CORE-MTL's physics decoder (paper §3.2, Eq. 13; Eq. 14 is that decoder's loss):

    S_c(n) = max(0, sum_k L[c, k] * Y_k(n)),      image = albedo * S(N, L)

with the 9 real SH basis functions Y_k below and L holding 9 coefficients per RGB channel (27 numbers).
Images live in sRGB; the physics (and the paper's L1 reconstruction loss) lives in linear RGB.

Equation numbers are the CORE-MTL paper's; docs/method.md states each one (label ``eq-N``).
"""

from __future__ import annotations

import torch

# Constants of the real SH basis, bands 0-2, in the order of :func:`sh_basis`.
SH_C0 = 0.282095
SH_C1 = 0.488603
SH_C2 = 1.092548
SH_C3 = 0.315392
SH_C4 = 0.546274
NUM_SH = 9


def sh_basis(normals: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """The 9 SH basis functions evaluated at unit normals.

    ``normals`` holds (x, y, z) along ``dim`` (e.g. a ``(B, 3, H, W)`` map); the result has 9
    entries along that dim, ordered Y_00; Y_1-1 (y), Y_10 (z), Y_11 (x); Y_2-2 (xy), Y_2-1 (yz),
    Y_21 (xz), Y_20 (3z^2-1), Y_22 (x^2-y^2).
    """
    if normals.shape[dim] != 3:
        raise ValueError(
            f"sh_basis expects 3 normal components along dim {dim}, got shape {tuple(normals.shape)}"
        )
    x, y, z = normals.unbind(dim)
    return torch.stack(
        [
            torch.full_like(x, SH_C0),
            SH_C1 * y,
            SH_C1 * z,
            SH_C1 * x,
            SH_C2 * x * y,
            SH_C2 * y * z,
            SH_C2 * x * z,
            SH_C3 * (3.0 * z * z - 1.0),
            SH_C4 * (x * x - y * y),
        ],
        dim=dim,
    )


def sh_shading(normals: torch.Tensor, lighting: torch.Tensor) -> torch.Tensor:
    """Per-channel SH irradiance S_c(n) = max(0, sum_k L[c,k] Y_k(n)) (the shading S of paper Eq. 13).

    Args:
        normals: ``(B, 3, H, W)`` unit normals.
        lighting: ``(B, 3, 9)`` SH coefficients per RGB channel (or ``(B, 27)``).
    Returns:
        ``(B, 3, H, W)`` non-negative shading.
    """
    if lighting.dim() == 2:
        lighting = lighting.view(lighting.shape[0], 3, NUM_SH)
    if normals.dim() != 4 or lighting.shape[1:] != (3, NUM_SH) or lighting.shape[0] != normals.shape[0]:
        raise ValueError(
            f"sh_shading expects normals (B,3,H,W) and lighting (B,3,9); got {tuple(normals.shape)} "
            f"and {tuple(lighting.shape)}"
        )
    basis = sh_basis(normals, dim=1)  # (B, 9, H, W)
    return torch.einsum("bck,bkhw->bchw", lighting, basis).clamp_min(0.0)


def render_lambertian(albedo: torch.Tensor, normals: torch.Tensor, lighting: torch.Tensor) -> torch.Tensor:
    """Linear-RGB image = albedo * S(N, L) (paper Eq. 13)."""
    return albedo * sh_shading(normals, lighting)


def srgb_to_linear(x: torch.Tensor) -> torch.Tensor:
    """Decode sRGB values in [0, 1] to linear RGB (IEC 61966-2-1)."""
    x = x.clamp(0.0, 1.0)
    return torch.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4)


def linear_to_srgb(x: torch.Tensor) -> torch.Tensor:
    """Encode linear RGB to sRGB in [0, 1] (clipping first)."""
    x = x.clamp(0.0, 1.0)
    return torch.where(x <= 0.0031308, 12.92 * x, 1.055 * x.clamp_min(0.0031308) ** (1.0 / 2.4) - 0.055)
