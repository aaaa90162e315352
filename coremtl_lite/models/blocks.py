"""Small building blocks shared by the encoders, heads and decoders.

Three of them are written for the speed of the training step on a CPU; each computes the same function
as the plain PyTorch call it replaces (:func:`channels_first` bit for bit, the others up to the float
rounding, about 1e-6 relative):

* :class:`DilatedDepthwiseConv2d` runs a dilated depthwise convolution on a channels-last copy of its
  input on the CPU, where that convolution's backward pass in the default (NCHW) layout is slow
  (mkldnn); the forward values are bit-identical, the gradients equal up to the order of their sums.
* :func:`upsample_to` resizes bilinearly by two small matrix products (the interpolation is separable)
  instead of ``F.interpolate``, whose CPU backward pass is 2-6x slower at the heads' sizes.
* :func:`channels_first` is ``x.contiguous()`` for a pooled channels-last map about to be flattened,
  with a backward pass that gives the gradient back channels-last: the CPU backward of
  ``F.adaptive_avg_pool2d`` on a channels-last input is about 5x slower when its gradient comes in the
  default layout, as a flatten's would.
"""

from __future__ import annotations

import functools
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "BilinearUpsample",
    "ConvBNReLU",
    "DSConv",
    "DilatedDepthwiseConv2d",
    "FiLM",
    "bilinear_matrix",
    "channels_first",
    "l2_normalise",
    "upsample_to",
]


class DilatedDepthwiseConv2d(nn.Conv2d):
    """A dilated depthwise 3x3-style convolution (``groups == in_channels == out_channels``,
    ``dilation > 1``): the same module and parameters as ``nn.Conv2d``, that on the CPU runs on a
    channels-last copy of an NCHW input and returns NCHW again.

    Why: on the CPU, mkldnn's backward pass of a *dilated* depthwise convolution is much slower in NCHW
    than in NHWC: for a batch of 32 at 64 channels, 8 x 8, dilation 2 (the lite encoder's last stage and
    each dense head's ASPP branch) the NHWC forward + backward took 0.4-0.8 of the NCHW time on one
    core, paired runs on a loaded 2-core machine, and the NCHW backward (4.5 ms) cost more than that of
    a non-dilated depthwise conv with three times the pixels. Non-dilated depthwise convs are as fast or
    faster in NCHW and stay plain ``nn.Conv2d``. The forward values are identical; the gradients are the
    same sums in another order (differences ~1e-6 relative). Other devices, and inputs already
    channels-last, use the plain convolution.
    """

    def __init__(self, channels: int, kernel: int, stride: int, padding: int, dilation: int):
        if dilation < 2:
            raise ValueError(f"DilatedDepthwiseConv2d needs dilation >= 2, got {dilation}: use nn.Conv2d")
        super().__init__(
            channels, channels, kernel, stride, padding, dilation=dilation, groups=channels, bias=False
        )

    def forward(self, x: Tensor) -> Tensor:
        if x.device.type != "cpu" or not x.is_contiguous():
            return super().forward(x)
        return super().forward(x.contiguous(memory_format=torch.channels_last)).contiguous()


class ConvBNReLU(nn.Sequential):
    """Conv (no bias) -> BatchNorm -> ReLU (ReLU optional); a dilated depthwise conv is a :class:`DilatedDepthwiseConv2d`."""

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
        conv = (
            DilatedDepthwiseConv2d(cin, kernel, stride, pad, dilation)
            if dilation > 1 and groups > 1 and groups == cin == cout
            else nn.Conv2d(cin, cout, kernel, stride, pad, dilation=dilation, groups=groups, bias=False)
        )
        layers: list[nn.Module] = [conv, nn.BatchNorm2d(cout)]
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


@functools.lru_cache(maxsize=64)
def _bilinear_matrix(n_in: int, n_out: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    scale = n_in / n_out
    # the source coordinate of each output pixel centre (half-pixel centres, clamped at the first pixel)
    src = ((torch.arange(n_out, dtype=torch.float64) + 0.5) * scale - 0.5).clamp_min(0.0)
    lo = src.floor().long().clamp_max(n_in - 1)
    hi = (lo + 1).clamp_max(n_in - 1)
    frac = src - lo
    rows = torch.arange(n_out)
    m = torch.zeros(n_out, n_in, dtype=torch.float64)  # weights in double, rounded once to ``dtype``
    m.index_put_((rows, lo), 1.0 - frac, accumulate=True)
    m.index_put_((rows, hi), frac, accumulate=True)  # lo == hi at the last pixel: the weights add to 1
    return m.to(device=device, dtype=dtype)


def bilinear_matrix(n_in: int, n_out: int, dtype: torch.dtype = torch.float32, device=None) -> Tensor:
    """The (n_out, n_in) matrix of 1-D linear interpolation with half-pixel centres (``align_corners=False``,
    as ``F.interpolate(mode="bilinear")`` computes it): row ``i`` holds the two weights of output pixel
    ``i``'s neighbours at source coordinate ``max(0, (i + 0.5) n_in / n_out - 0.5)`` (a copy of the
    matrix :func:`upsample_to` keeps per size, dtype and device)."""
    return _bilinear_matrix(int(n_in), int(n_out), dtype, torch.device(device or "cpu")).clone()


def upsample_to(x: Tensor, size: tuple[int, int] | torch.Size) -> Tensor:
    """Bilinear resize of an (N, C, h, w) map to ``size`` (no-op when already that size), the function of
    ``F.interpolate(x, size, mode="bilinear", align_corners=False)``.

    Bilinear interpolation is separable: ``out = R x C^T`` with ``R = bilinear_matrix(h, size[0])`` and
    ``C = bilinear_matrix(w, size[1])``, two small matrix products over every (n, c) image. On a CPU
    its forward + backward is 2-6x faster than ``F.interpolate``'s at the heads' sizes (7 x 16 x 16 ->
    64 x 64 in batches of 32); the values agree up to float rounding (~5e-7).
    """
    size = (int(size[0]), int(size[1]))
    if tuple(x.shape[-2:]) == size:
        return x
    if x.dim() != 4:
        raise ValueError(f"upsample_to needs an (N, C, h, w) map, got shape {tuple(x.shape)}")
    # under torch.compile the matrices are built in the traced graph (Dynamo does not use the cache)
    matrix = _bilinear_matrix.__wrapped__ if torch.compiler.is_compiling() else _bilinear_matrix
    rows = matrix(int(x.shape[-2]), size[0], x.dtype, x.device)
    cols = matrix(int(x.shape[-1]), size[1], x.dtype, x.device)
    return rows @ (x @ cols.t())


class BilinearUpsample(nn.Module):
    """Bilinear resize by an integer ``factor`` with :func:`upsample_to` (the module form of ``nn.Upsample(
    scale_factor=factor, mode="bilinear")``, without parameters)."""

    def __init__(self, factor: int = 2):
        super().__init__()
        self.factor = int(factor)

    def forward(self, x: Tensor) -> Tensor:
        return upsample_to(x, (x.shape[-2] * self.factor, x.shape[-1] * self.factor))

    def extra_repr(self) -> str:
        return f"factor={self.factor}"


class _ChannelsFirst(torch.autograd.Function):
    """``x.contiguous()``; the backward returns the gradient in ``x``'s channels-last layout."""

    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:
        ctx.channels_last = not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)
        return x.contiguous()

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        return grad.contiguous(memory_format=torch.channels_last) if ctx.channels_last else grad


def channels_first(x: Tensor) -> Tensor:
    """``x.contiguous()`` (the default layout, e.g. before a flatten), whose gradient goes back in ``x``'s own
    layout when ``x`` (B, C, H, W) is channels-last: the pooling before it then runs its fast backward
    (module docstring). The values and gradients are those of ``x.contiguous()`` bit for bit; the
    backward is differentiable (MT-CRL's G-IRM differentiates through it)."""
    return _ChannelsFirst.apply(x) if x.dim() == 4 else x.contiguous()


def l2_normalise(x: Tensor, dim: int = 1, eps: float = 1e-6) -> Tensor:
    """``x / max(||x||, eps)`` along ``dim`` (as ``F.normalize``, but written with a sum of squares:
    ``torch.linalg.vector_norm`` over the channel dim of an NCHW map is an order of magnitude slower on CPU)."""
    return x * torch.rsqrt(x.pow(2).sum(dim=dim, keepdim=True).clamp_min(eps * eps))
