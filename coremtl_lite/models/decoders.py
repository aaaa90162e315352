"""Grounding decoders D(z_s, z_p) (paper §3.2, Appendix E): training-time only, no encoder skips.

**Hard grounding** (:class:`PhysicsDecoder`, Eq. 13-14): role-specific heads composed by a fixed
shading model,

    I_hat = A ⊙ S(N, L),   S_c(n) = max(0, sum_k L[c, k] Y_k(n))        (Eq. 13, SH shading of §3.2)

* normals N from z_s only: a geometry trunk G = g(z_s) (1x1 conv, x2 upsampling, a depthwise-separable
  block; stride 4), a 1x1 conv to 3 channels, bilinear upsampling, L2 normalisation;
* albedo A from z_p: z_p is a single vector, so it cannot by itself say *where* a colour goes. We
  use a **region palette**: the geometry trunk G (from z_s) predicts a soft partition of the image into
  ``regions`` = 8 regions (per-pixel softmax), and z_p predicts one linear-RGB colour per region
  (``sigmoid(Linear(z_p))``, (B, regions, 3)); A(p) = sum_j m_j(p) c_j. The layout may come from z_s
  (object boundaries are semantic), but every colour value comes from z_p, so appearance has nowhere
  else to go. (A FiLM/AdaIN modulation of z_s features by z_p would let z_s features pass colour
  straight through to A; the palette rules that out.) Within-region texture cannot be represented by
  a vector z_p and is left to the residual of the L1 loss.
* lighting L (27 SH numbers) from the global residual vector z_p: an MLP initialised to a soft frontal
  light (Y_00 and Y_10 terms), so early shading is neither black nor saturated.

The composition happens in linear RGB at the *render resolution* = output size / ``render_stride``
(default 2 with the lite encoder, 1 with ResNets): ``recon_linear`` and every factor map (albedo,
shading, normal_phys, regions) have that size, ``recon`` is the sRGB encoding bilinearly upsampled to
the output size. The reconstruction loss compares at the render resolution against the area-averaged
input (:func:`coremtl_lite.losses.reconstruction.reconstruction_loss`); rendering at stride 2 cuts the
per-pixel work of decoding and of its loss by 4, which is most of CORE-MTL's extra step cost on CPU.

**Soft grounding** (:class:`GenericDecoder`, Eq. 15): a stack of residual upsampling blocks from z_s,
each modulated AdaIN-style by z_p (instance-normalised features scaled and shifted by affine maps of
z_p), to the render stride, then a 1x1 conv and a sigmoid (``recon_linear`` is its linear-RGB decoding
at the render resolution) and bilinear upsampling to the output resolution (``recon``).

Equation numbers are the CORE-MTL paper's; docs/method.md states each one (label ``eq-N``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from coremtl_lite.models.blocks import (
    BilinearUpsample,
    ConvBNReLU,
    DSConv,
    FiLM,
    l2_normalise,
    upsample_to,
)
from coremtl_lite.shading import NUM_SH, SH_C0, SH_C1, linear_to_srgb, sh_shading, srgb_to_linear

__all__ = ["GenericDecoder", "PhysicsDecoder", "build_decoder"]


def _check_streams(z_s: Tensor, z_p: Tensor, c_s: int, c_p: int) -> None:
    if z_s.dim() != 4 or z_s.shape[1] != c_s:
        raise ValueError(f"decode: z_s must be (B, {c_s}, h, w), got {tuple(z_s.shape)}")
    if z_p.dim() != 2 or z_p.shape[1] != c_p or z_p.shape[0] != z_s.shape[0]:
        raise ValueError(f"decode: z_p must be (B={z_s.shape[0]}, {c_p}), got {tuple(z_p.shape)}")


def _render_size(size: tuple[int, int], stride: int) -> tuple[int, int]:
    return (max(1, -(-int(size[0]) // stride)), max(1, -(-int(size[1]) // stride)))


class PhysicsDecoder(nn.Module):
    """Physics-based inverse-rendering decoder (hard grounding, Eq. 13-14; see module doc).

    ``forward(z_s, z_p, size)`` returns ``recon`` (sRGB, (B, 3, *size)) and, at the render resolution,
    ``recon_linear``, ``albedo`` (linear RGB), ``shading``, ``normal_phys`` (unit normals from z_s) and
    ``regions`` (the soft partition, (B, R, h, w)); plus ``lighting`` (B, 3, 9).
    """

    def __init__(self, c_s: int, c_p: int, channels: int = 32, regions: int = 8, render_stride: int = 1):
        super().__init__()
        self.c_s, self.c_p, self.regions, self.render_stride = c_s, c_p, regions, int(render_stride)
        self.trunk = nn.Sequential(
            ConvBNReLU(c_s, channels, 1),
            BilinearUpsample(2),
            DSConv(channels, channels),
        )
        self.normal = nn.Conv2d(channels, 3, 1)  # N from z_s
        self.region_logits = nn.Conv2d(channels, regions, 1)  # where each albedo colour goes (from z_s)
        self.palette = nn.Linear(c_p, regions * 3)  # the colours (from z_p)
        hidden = max(c_p, 32)
        first, last = nn.Linear(c_p, hidden), nn.Linear(hidden, 3 * NUM_SH)
        self.light = nn.Sequential(first, nn.ReLU(inplace=True), last)
        with torch.no_grad():  # start from a soft frontal light: S ~ 0.8 at n = (0, 0, 1)
            last.weight.mul_(0.1)
            bias = torch.zeros(3, NUM_SH)
            bias[:, 0] = 0.5 / SH_C0
            bias[:, 2] = 0.3 / SH_C1
            last.bias.copy_(bias.reshape(-1))

    def forward(self, z_s: Tensor, z_p: Tensor, size: tuple[int, int]) -> dict[str, Tensor]:
        _check_streams(z_s, z_p, self.c_s, self.c_p)
        render = _render_size(size, self.render_stride)
        g = self.trunk(z_s)
        normal = l2_normalise(upsample_to(self.normal(g), render), dim=1)
        masks = torch.softmax(upsample_to(self.region_logits(g), render), dim=1)  # (B, R, h, w)
        colours = torch.sigmoid(self.palette(z_p)).view(-1, self.regions, 3)  # (B, R, 3)
        albedo = torch.einsum("brhw,brc->bchw", masks, colours)  # A from z_p, laid out by z_s
        lighting = self.light(z_p).view(-1, 3, NUM_SH)  # L: 27 SH numbers from the global feature
        shading = sh_shading(normal, lighting)  # S(N, L) of Eq. 13
        recon_linear = albedo * shading  # Eq. 13: I = A ⊙ S(N, L)
        recon = linear_to_srgb(upsample_to(recon_linear, size))
        return {
            "recon": recon,
            "recon_linear": recon_linear,
            "albedo": albedo,
            "shading": shading,
            "normal_phys": normal,
            "lighting": lighting,
            "regions": masks,
        }


class _ResUpBlock(nn.Module):
    """x2 bilinear upsampling -> depthwise-separable conv -> AdaIN(z_p) -> ReLU, plus the upsampled input."""

    def __init__(self, channels: int, c_p: int):
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1, groups=channels, bias=False),
            nn.Conv2d(channels, channels, 1),
        )
        self.adain = FiLM(c_p, channels, normalise=True)

    def forward(self, x: Tensor, z_p: Tensor) -> Tensor:
        x = upsample_to(x, (2 * x.shape[-2], 2 * x.shape[-1]))
        return x + F.relu(self.adain(self.conv(x), z_p))


class GenericDecoder(nn.Module):
    """Generic convolutional decoder (soft grounding, Eq. 15; see module doc).

    ``forward(z_s, z_p, size)`` returns ``recon`` (sRGB in [0, 1], (B, 3, *size)) and ``recon_linear``.
    """

    def __init__(
        self, c_s: int, c_p: int, channels: int = 32, output_stride: int = 8, render_stride: int = 1
    ):
        super().__init__()
        self.c_s, self.c_p, self.render_stride = c_s, c_p, int(render_stride)
        n_up = max(int(round(math.log2(output_stride / self.render_stride))), 1)  # up to the render stride
        self.stem = ConvBNReLU(c_s, channels, 1)
        self.blocks = nn.ModuleList([_ResUpBlock(channels, c_p) for _ in range(n_up)])
        self.to_rgb = nn.Conv2d(channels, 3, 1)

    def forward(self, z_s: Tensor, z_p: Tensor, size: tuple[int, int]) -> dict[str, Tensor]:
        _check_streams(z_s, z_p, self.c_s, self.c_p)
        x = self.stem(z_s)
        for block in self.blocks:
            x = block(x, z_p)  # z_p enters only through AdaIN modulation
        rendered = torch.sigmoid(upsample_to(self.to_rgb(x), _render_size(size, self.render_stride)))
        return {"recon": upsample_to(rendered, size), "recon_linear": srgb_to_linear(rendered)}


def build_decoder(
    grounding: str, c_s: int, c_p: int, channels: int, output_stride: int, render_stride: int = 1
) -> nn.Module | None:
    """The decoder for ``model.grounding``: hard -> :class:`PhysicsDecoder`, soft -> :class:`GenericDecoder`,
    none -> ``None``."""
    if grounding == "hard":
        return PhysicsDecoder(c_s, c_p, channels, render_stride=render_stride)
    if grounding == "soft":
        return GenericDecoder(c_s, c_p, channels, output_stride, render_stride)
    if grounding == "none":
        return None
    raise ValueError(f"model.grounding={grounding!r} is not one of hard, soft, none")
