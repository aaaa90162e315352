"""The four image corruptions of Cityscapes-C (paper §4.2), in torch.

Definitions and severity tables follow Hendrycks & Dietterich (2019, "Benchmarking Neural Network
Robustness to Common Corruptions and Perturbations", ImageNet-C) as packaged by Michaelis et al.
(2019, ``imagecorruptions``), which Cityscapes-C uses. Images are float sRGB in [0, 1]; the reference
works on uint8 and quantises its output, otherwise the deterministic corruptions (contrast, defocus
blur) match it to float precision. The random ones (Gaussian noise, fog) use torch generators, so
they match the reference in distribution, not bit for bit.

Spatial parameters (blur radius, fog fractal) are in pixels, as in the reference, regardless of the
image size.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

# Severity tables of imagecorruptions (severity 1..5).
GAUSSIAN_NOISE = (0.08, 0.12, 0.18, 0.26, 0.38)  # noise std
CONTRAST = (0.4, 0.3, 0.2, 0.1, 0.05)  # contrast factor
DEFOCUS_BLUR = ((3, 0.1), (4, 0.5), (6, 0.5), (8, 0.5), (10, 0.5))  # (disk radius, alias-blur sigma)
FOG = ((1.5, 2.0), (2.0, 2.0), (2.5, 1.7), (2.5, 1.5), (3.0, 1.4))  # (fog strength, wibble decay)


def _as_batch(x: torch.Tensor) -> tuple[torch.Tensor, bool]:
    if x.dim() == 3:
        return x[None], True
    if x.dim() != 4 or x.shape[1] not in (1, 3):
        raise ValueError(
            f"corruptions expect an image (C,H,W) or batch (B,C,H,W) with C in (1, 3), "
            f"got shape {tuple(x.shape)}"
        )
    return x, False


def _generators(
    seeds: torch.Tensor | None, generator: torch.Generator | None, n: int
) -> list[torch.Generator]:
    """One generator per image: seeded by ``seeds[b]``, else the shared ``generator``."""
    if seeds is not None:
        seeds = torch.as_tensor(seeds).reshape(-1)
        if len(seeds) != n:
            raise ValueError(f"corruption seeds: need one per image ({n}), got {len(seeds)}")
        gens = []
        for s in seeds.tolist():
            g = torch.Generator()
            g.manual_seed(int(s))
            gens.append(g)
        return gens
    if generator is None:
        raise ValueError("random corruptions need seeds=... (one per image) or generator=...")
    return [generator] * n


def _check_severity(severity: int) -> int:
    if severity not in (1, 2, 3, 4, 5):
        raise ValueError(f"corruption severity must be an integer in 1..5, got {severity!r}")
    return severity


def gaussian_noise(x: torch.Tensor, severity: int = 1, seeds=None, generator=None) -> torch.Tensor:
    """``clip(x + N(0, c^2))`` with c = 0.08, 0.12, 0.18, 0.26, 0.38 (ImageNet-C)."""
    c = GAUSSIAN_NOISE[_check_severity(severity) - 1]
    xb, single = _as_batch(x)
    gens = _generators(seeds, generator, len(xb))
    noise = torch.empty(xb.shape)
    for b, g in enumerate(gens):
        torch.randn(xb.shape[1:], generator=g, out=noise[b])
    out = (xb + c * noise.to(xb)).clamp(0.0, 1.0)
    return out[0] if single else out


def contrast(x: torch.Tensor, severity: int = 1, **_: object) -> torch.Tensor:
    """``clip((x - mean) c + mean)`` with per-image, per-channel means; c = 0.4 ... 0.05 (ImageNet-C)."""
    c = CONTRAST[_check_severity(severity) - 1]
    xb, single = _as_batch(x)
    means = xb.mean(dim=(2, 3), keepdim=True)
    out = ((xb - means) * c + means).clamp(0.0, 1.0)
    return out[0] if single else out


def _gaussian_kernel1d(ksize: int, sigma: float) -> torch.Tensor:
    """OpenCV's ``getGaussianKernel`` (sigma > 0)."""
    i = torch.arange(ksize, dtype=torch.float64) - (ksize - 1) / 2.0
    k = torch.exp(-(i * i) / (2.0 * sigma * sigma))
    return k / k.sum()


def disk_kernel(radius: int, alias_blur: float) -> torch.Tensor:
    """The anti-aliased disk of ImageNet-C's defocus blur (``imagecorruptions.disk``).

    A binary disk of the given radius on a grid of half-width max(8, radius), normalised, then blurred
    by a 3x3 (radius <= 8) or 5x5 Gaussian of sigma ``alias_blur`` with OpenCV's default
    reflect-101 border.
    """
    half = 8 if radius <= 8 else radius
    ksize = 3 if radius <= 8 else 5
    grid = torch.arange(-half, half + 1, dtype=torch.float64)
    yy, xx = torch.meshgrid(grid, grid, indexing="ij")
    d = ((xx**2 + yy**2) <= radius**2).double()
    d = d / d.sum()
    g = _gaussian_kernel1d(ksize, alias_blur)
    p = ksize // 2
    padded = F.pad(d[None, None], (p, p, p, p), mode="reflect")  # reflect == OpenCV BORDER_REFLECT_101
    out = F.conv2d(F.conv2d(padded, g.view(1, 1, 1, -1)), g.view(1, 1, -1, 1))
    return out[0, 0].float()


def _crop_zero_border(kernel: torch.Tensor) -> torch.Tensor:
    """``kernel`` without the rings of exact zeros around it (taps that add nothing)."""
    k = kernel.shape[-1]
    nonzero = kernel != 0
    rows, cols = nonzero.any(1).nonzero().squeeze(1), nonzero.any(0).nonzero().squeeze(1)
    ring = min(int(rows.min()), int(cols.min()), k - 1 - int(rows.max()), k - 1 - int(cols.max()))
    return kernel[ring : k - ring, ring : k - ring]


def defocus_blur(x: torch.Tensor, severity: int = 1, **_: object) -> torch.Tensor:
    """Convolution with an anti-aliased disk (radius 3, 4, 6, 8, 10 px), reflect-101 border (ImageNet-C).

    The reflect padding is the reference's (half the disk grid); the convolution skips the kernel's
    all-zero outer rings and runs channels-last, both of which leave every output value unchanged.
    """
    radius, alias = DEFOCUS_BLUR[_check_severity(severity) - 1]
    xb, single = _as_batch(x)
    p = disk_kernel(radius, alias).shape[-1] // 2
    if min(xb.shape[-2:]) <= p:
        raise ValueError(
            f"defocus_blur severity {severity} needs images larger than {p} px, got {tuple(xb.shape)}"
        )
    kernel = _crop_zero_border(disk_kernel(radius, alias)).to(xb)
    k = kernel.shape[-1]
    c = xb.shape[1]
    padded = F.pad(xb, (k // 2,) * 4, mode="reflect").contiguous(memory_format=torch.channels_last)
    out = F.conv2d(padded, kernel.expand(c, 1, k, k).contiguous(), groups=c).clamp_(0.0, 1.0).contiguous()
    return out[0] if single else out


def _plasma_draws(mapsize: int) -> int:
    """How many uniforms one diamond-square height map of side ``mapsize`` draws."""
    return sum(3 * (mapsize // step) ** 2 for step in (1 << k for k in range(1, mapsize.bit_length())))


def plasma_fractals(mapsize: int, wibbledecay: float, generators: list[torch.Generator]) -> torch.Tensor:
    """``(B, mapsize, mapsize)`` diamond-square height maps in [0, 1], map ``b`` drawn from ``generators[b]``.

    The batched form of ``imagecorruptions.plasma_fractal``: each generator's uniforms are drawn in one
    call (a CPU generator yields the same numbers in one call as in several consecutive ones) and
    consumed in the reference order (per step: squares, row diamonds, column diamonds), then every step
    runs on the whole batch at once. Map ``b`` equals ``plasma_fractal(mapsize, wibbledecay, g_b)``.
    """
    if mapsize & (mapsize - 1):
        raise ValueError(f"plasma_fractal mapsize must be a power of two, got {mapsize}")
    n = len(generators)
    draws = _plasma_draws(mapsize)
    u = torch.empty(n, draws, dtype=torch.float64)
    for b, g in enumerate(generators):
        torch.rand(draws, generator=g, dtype=torch.float64, out=u[b])
    m = torch.zeros(n, mapsize, mapsize, dtype=torch.float64)
    step, wibble, used = mapsize, 100.0, 0

    def wibbled_mean(a: torch.Tensor) -> torch.Tensor:
        nonlocal used
        k = a.shape[1] * a.shape[2]
        noise = (u[:, used : used + k].reshape(a.shape) * 2.0 - 1.0) * wibble
        used += k
        return a / 4 + wibble * noise

    while step >= 2:
        h = step // 2
        corner = m[:, 0:mapsize:step, 0:mapsize:step]
        acc = corner + torch.roll(corner, -1, 1)
        acc = acc + torch.roll(acc, -1, 2)
        m[:, h:mapsize:step, h:mapsize:step] = wibbled_mean(acc)  # squares
        dr = m[:, h:mapsize:step, h:mapsize:step]
        ul = m[:, 0:mapsize:step, 0:mapsize:step]
        lt = dr + torch.roll(dr, 1, 1) + ul + torch.roll(ul, -1, 2)
        m[:, 0:mapsize:step, h:mapsize:step] = wibbled_mean(lt)  # diamonds (rows)
        tt = dr + torch.roll(dr, 1, 2) + ul + torch.roll(ul, -1, 1)
        m[:, h:mapsize:step, 0:mapsize:step] = wibbled_mean(tt)  # diamonds (columns)
        step //= 2
        wibble /= wibbledecay
    m = m - m.amin(dim=(1, 2), keepdim=True)
    return (m / m.amax(dim=(1, 2), keepdim=True)).float()


def plasma_fractal(mapsize: int, wibbledecay: float, generator: torch.Generator) -> torch.Tensor:
    """Diamond-square height map in [0, 1] (``imagecorruptions.plasma_fractal``), ``mapsize`` a power of 2."""
    return plasma_fractals(mapsize, wibbledecay, [generator])[0]


def fog(x: torch.Tensor, severity: int = 1, seeds=None, generator=None) -> torch.Tensor:
    """``clip((x + c0 * plasma) * max(x) / (max(x) + c0))`` (ImageNet-C fog; plasma wibble decay c1)."""
    c0, c1 = FOG[_check_severity(severity) - 1]
    xb, single = _as_batch(x)
    hh, ww = xb.shape[-2:]
    size = 1 << (max(hh, ww) - 1).bit_length()
    gens = _generators(seeds, generator, len(xb))
    plasma = plasma_fractals(size, c1, gens)[:, :hh, :ww].to(xb)[:, None]
    max_val = xb.amax(dim=(1, 2, 3), keepdim=True)
    out = ((xb + c0 * plasma) * max_val / (max_val + c0)).clamp(0.0, 1.0)
    return out[0] if single else out


def corruption_strength(clean: torch.Tensor, corrupted: torch.Tensor, name: str) -> float:
    """How far a corruption moved a batch: the mean absolute change, except for fog, whose effect is to
    replace image structure: there it is 1 - the mean correlation with the clean image (both grow with
    the severity; the pixel change of fog does not, severities 3 and 4 differ only in the fractal)."""
    if name != "fog":
        return float((corrupted - clean).abs().mean())
    a = (clean - clean.mean((1, 2, 3), keepdim=True)).flatten(1)
    b = (corrupted - corrupted.mean((1, 2, 3), keepdim=True)).flatten(1)
    return float(1 - F.cosine_similarity(a, b).mean())


CORRUPTIONS: dict[str, Callable[..., torch.Tensor]] = {
    "contrast": contrast,
    "defocus_blur": defocus_blur,
    "fog": fog,
    "gaussian_noise": gaussian_noise,
}


def corrupt(x: torch.Tensor, name: str, severity: int, seeds=None, generator=None) -> torch.Tensor:
    """Apply corruption ``name`` at ``severity`` (1-5) to an image or batch in [0, 1].

    Random corruptions take ``seeds`` (one int per image: deterministic per image) or a ``generator``.
    """
    if name not in CORRUPTIONS:
        raise ValueError(f"unknown corruption {name!r}; choose one of {sorted(CORRUPTIONS)}")
    return CORRUPTIONS[name](x, severity, seeds=seeds, generator=generator)


__all__ = [
    "CORRUPTIONS",
    "corrupt",
    "corruption_strength",
    "contrast",
    "defocus_blur",
    "fog",
    "gaussian_noise",
    "disk_kernel",
    "plasma_fractal",
    "plasma_fractals",
]
