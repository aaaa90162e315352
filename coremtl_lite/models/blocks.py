"""Small building blocks shared by the encoders, heads and decoders."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["ConvBNReLU", "DSConv", "FiLM", "l2_normalise", "upsample_to"]


class ConvBNReLU(nn.Sequential):
    """Conv (no bias) -> BatchNorm -> ReLU (ReLU optional)."""

    def __init__(
        self,
        cin: int,
        cout: int,
        kernel: int = 3,
        stride: int = 1,
        dilation: int = 1,
        groups: int = 1,
        relu: bool = True,
    ):
        pad = dilation * (kernel - 1) // 2
        layers: list[nn.Module] = [
            nn.Conv2d(cin, cout, kernel, stride, pad, dilation=dilation, groups=groups, bias=False),
            nn.BatchNorm2d(cout),
        ]
        if relu:
            layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)


class DSConv(nn.Module):
    """Depthwise-separable conv block (MobileNet): depthwise 3x3 -> BN -> ReLU -> pointwise 1x1 -> BN -> ReLU.

    With ``residual=True`` (same shape in and out) the input is added before the last ReLU.
    """

    def __init__(self, cin: int, cout: int, stride: int = 1, dilation: int = 1, residual: bool = False):
        super().__init__()
        if residual and (cin != cout or stride != 1):
            raise ValueError(
                f"DSConv residual needs cin == cout and stride 1, got {cin}->{cout}, stride {stride}"
            )
        self.dw = ConvBNReLU(cin, cin, 3, stride, dilation, groups=cin)
        self.pw = ConvBNReLU(cin, cout, 1, relu=False)
        self.residual = residual

    def forward(self, x: Tensor) -> Tensor:
        y = self.pw(self.dw(x))
        if self.residual:
            y = y + x
        return F.relu(y)


class FiLM(nn.Module):
    """Feature-wise affine modulation by a vector: ``x * (1 + gamma(v)) + beta(v)`` (AdaIN-style when the
    input is instance-normalised first, ``normalise=True``)."""

    def __init__(self, vec_dim: int, channels: int, normalise: bool = False):
        super().__init__()
        self.affine = nn.Linear(vec_dim, 2 * channels)
        with torch.no_grad():  # start close to the identity (gamma, beta ~ 0), with a live gradient to v
            self.affine.weight.mul_(0.1)
            self.affine.bias.zero_()
        self.normalise = normalise

    def forward(self, x: Tensor, v: Tensor) -> Tensor:
        if self.normalise:
            x = F.instance_norm(x, eps=1e-5)
        gamma, beta = self.affine(v).chunk(2, dim=1)
        return x * (1.0 + gamma[:, :, None, None]) + beta[:, :, None, None]


def upsample_to(x: Tensor, size: tuple[int, int] | torch.Size) -> Tensor:
    """Bilinear resize to ``size`` (no-op when already that size)."""
    size = (int(size[0]), int(size[1]))
    if tuple(x.shape[-2:]) == size:
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def l2_normalise(x: Tensor, dim: int = 1, eps: float = 1e-6) -> Tensor:
    """``x / max(||x||, eps)`` along ``dim`` (as ``F.normalize``, but written with a sum of squares:
    ``torch.linalg.vector_norm`` over the channel dim of an NCHW map is an order of magnitude slower on CPU)."""
    return x * torch.rsqrt(x.pow(2).sum(dim=dim, keepdim=True).clamp_min(eps * eps))
