"""Grounding losses L_rec (paper §3.2, Eq. 14 and Eq. 15) and the physics regularisers of the released code.

* Photometric term: L1 between the decoder's linear-RGB image and the input decoded from sRGB to
  linear RGB (Eq. 14: the physics lives in linear RGB), plus ``perceptual_weight`` x a perceptual
  distance on the sRGB images.
* Perceptual distance (:func:`build_perceptual`): LPIPS (Zhang et al. 2018) through the ``lpips``
  package. LPIPS needs ImageNet weights of its AlexNet backbone, which torchvision downloads; offline
  that fails (URLError), and ``"auto"`` then says so once (a warning) and falls back to the
  structural dissimilarity 1 - SSIM (Wang et al. 2004), the classic hand-designed perceptual
  similarity that LPIPS was benchmarked against, computed exactly as ``pytorch_msssim.ssim`` (Gaussian
  window 11, sigma 1.5; :func:`ssim`, tested against it) but with matrix products for CPU speed. ``"lpips"`` insists on LPIPS and raises offline;
  ``"ssim"`` and ``"none"`` choose directly.
* Physics regularisers for hard grounding (released code; weights in :data:`PHYSICS_WEIGHTS`):
  albedo total variation (piecewise-constant albedo), near-grey shading (colour belongs to the albedo,
  the light only tints slightly), a small albedo-normal cross-covariance (albedo must not encode
  geometry), and a geometry term: the decoder's normals N (decoded from z_s only) against the
  ground-truth normals when the batch has them (1 - cosine over valid pixels).

Everything is computed in float32.

Equation numbers are the CORE-MTL paper's; docs/method.md states each one (label ``eq-N``).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from coremtl_lite.losses.task_losses import normal_loss
from coremtl_lite.runtime import as_floats
from coremtl_lite.shading import linear_to_srgb, srgb_to_linear

__all__ = [
    "LPIPSLoss",
    "PHYSICS_WEIGHTS",
    "SSIMLoss",
    "albedo_normal_covariance",
    "albedo_tv",
    "build_perceptual",
    "class_balance_weights",
    "grey_shading",
    "physics_regularisers",
    "reconstruction_loss",
    "ssim",
]

#: weights of the physics regularisers of hard grounding (added to the photometric L1 inside L_rec)
PHYSICS_WEIGHTS: dict[str, float] = {
    "albedo_tv": 0.05,
    "grey_shading": 0.05,
    "albedo_normal_cov": 0.1,
    "geometry": 0.5,
}

_LPIPS_FAILED: list[str] = []  # the reason LPIPS weights could not be loaded in this process (said once)


def _gauss_window(size: int, sigma: float, dtype: torch.dtype, device: torch.device) -> Tensor:
    x = torch.arange(size, dtype=dtype, device=device) - size // 2
    g = torch.exp(-(x**2) / (2.0 * sigma**2))
    return g / g.sum()


def _band_matrix(n: int, window: Tensor) -> Tensor:
    """(n - k + 1, n) matrix whose rows are the window shifted by one: ``M @ x`` = valid 1-d filtering."""
    k = window.numel()
    idx = (
        torch.arange(n - k + 1, device=window.device)[:, None]
        + torch.arange(k, device=window.device)[None, :]
    )
    m = torch.zeros(n - k + 1, n, dtype=window.dtype, device=window.device)
    return m.scatter_(1, idx, window.expand(n - k + 1, k))


def ssim(a: Tensor, b: Tensor, win_size: int = 11, sigma: float = 1.5, data_range: float = 1.0) -> Tensor:
    """Mean SSIM (Wang et al. 2004) of two image batches (B, C, H, W), as ``pytorch_msssim.ssim``.

    Same Gaussian window (``win_size`` 11, sigma 1.5, valid filtering), constants K1 = 0.01, K2 = 0.03
    and averaging; the separable filter is applied as two banded matrix products, which on CPU is
    several times faster than ``pytorch_msssim``'s depthwise convolutions in the backward pass (the
    tests check the two agree). The window shrinks to the largest odd size that fits small images.
    """
    if a.shape != b.shape or a.dim() != 4:
        raise ValueError(
            f"ssim expects two (B, C, H, W) batches of the same shape, got {tuple(a.shape)} and "
            f"{tuple(b.shape)}"
        )
    a, b = a.float(), b.float()
    win = min(win_size, a.shape[-1], a.shape[-2])
    win = win if win % 2 == 1 else win - 1
    window = _gauss_window(win, sigma, a.dtype, a.device)
    gh, gw = _band_matrix(a.shape[-2], window), _band_matrix(a.shape[-1], window)
    maps = torch.stack([a, b, a * a, b * b, a * b])
    mu1, mu2, e11, e22, e12 = gh @ maps @ gw.T  # Gaussian filtering along H, then along W
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    s11, s22, s12 = e11 - mu1 * mu1, e22 - mu2 * mu2, e12 - mu1 * mu2
    cs = (2 * s12 + c2) / (s11 + s22 + c2)
    return ((2 * mu1 * mu2 + c1) / (mu1 * mu1 + mu2 * mu2 + c1) * cs).mean()


class SSIMLoss(nn.Module):
    """1 - SSIM of two sRGB image batches in [0, 1] (:func:`ssim`), a scalar (batch mean)."""

    name = "ssim"

    def forward(self, a: Tensor, b: Tensor) -> Tensor:
        return 1.0 - ssim(a, b)


class LPIPSLoss(nn.Module):
    """LPIPS distance of two sRGB image batches in [0, 1] (mean over the batch); the network is frozen.

    The AlexNet backbone weights are read from the local torch hub cache (``torch.hub.get_dir()``,
    i.e. ``$TORCH_HOME/hub/checkpoints``); nothing is downloaded. Without them this raises
    :class:`FileNotFoundError` (``build_perceptual("auto")`` then falls back to 1 - SSIM and says so
    once). LPIPS's own linear calibration layers ship inside the ``lpips`` package.
    ``pnet_rand=True`` keeps a randomly initialised backbone (for tests).
    """

    name = "lpips"
    #: torchvision's file name of the ImageNet AlexNet weights (``AlexNet_Weights.IMAGENET1K_V1``)
    BACKBONE_FILE = "alexnet-owt-7be5be79.pth"

    def __init__(self, net: str = "alex", pnet_rand: bool = False):
        super().__init__()
        import lpips

        if net != "alex":
            raise ValueError(f"LPIPSLoss supports net='alex' only, got {net!r}")
        state = None
        if not pnet_rand:
            cached = Path(torch.hub.get_dir()) / "checkpoints" / self.BACKBONE_FILE
            if not cached.is_file():
                raise FileNotFoundError(
                    f"LPIPS needs torchvision's AlexNet weights {self.BACKBONE_FILE} in the "
                    "local torch hub cache (torch.hub.get_dir()/checkpoints); no download is "
                    "attempted"
                )
            state = torch.load(cached, map_location="cpu", weights_only=True)
        with warnings.catch_warnings():  # lpips passes torchvision's deprecated `pretrained=` argument
            warnings.filterwarnings(
                "ignore", message=r".*(pretrained|weight enum).*deprecated", category=UserWarning
            )
            warnings.filterwarnings(
                "ignore", message=r"Arguments other than a weight enum", category=UserWarning
            )
            self.net = lpips.LPIPS(net=net, pretrained=True, pnet_rand=True, verbose=False)
        if state is not None:  # lpips keeps AlexNet's feature layers under their indices in slice1..slice5
            backbone = self.net.net
            mapped = {
                f"{name}.{index}.{key}": state[f"features.{index}.{key}"]
                for name, part in backbone.named_children()
                for index, layer in part.named_children()
                for key in layer.state_dict()
            }
            backbone.load_state_dict(mapped)
        self.net.eval()
        for p in self.net.parameters():
            p.requires_grad_(False)

    def train(self, mode: bool = True) -> LPIPSLoss:
        """Always in eval mode (frozen network)."""
        return super().train(False)

    def forward(self, a: Tensor, b: Tensor) -> Tensor:
        return self.net(a.float(), b.float(), normalize=True).mean()  # normalize: [0, 1] -> [-1, 1]


def build_perceptual(kind: str = "auto") -> nn.Module | None:
    """The perceptual distance ``kind`` (auto | lpips | ssim | none); see the module doc for the fallback."""
    if kind == "none":
        return None
    if kind == "ssim":
        return SSIMLoss()
    if kind not in ("auto", "lpips"):
        raise ValueError(f"loss.perceptual={kind!r} is not one of auto, lpips, ssim, none")
    if kind == "auto" and _LPIPS_FAILED:
        return SSIMLoss()
    try:
        return LPIPSLoss("alex")
    except Exception as err:  # URLError offline, missing package, corrupt cache
        if kind == "lpips":
            raise RuntimeError(
                f"loss.perceptual=lpips, but LPIPS could not load its backbone weights "
                f"({type(err).__name__}: {err}); use loss.perceptual=auto or ssim offline"
            ) from err
        if not _LPIPS_FAILED:
            _LPIPS_FAILED.append(f"{type(err).__name__}: {err}")
            warnings.warn(
                f"coremtl_lite: LPIPS backbone weights are unavailable ({_LPIPS_FAILED[0]}); the "
                "reconstruction loss uses 1 - SSIM (pytorch_msssim) as its perceptual term instead.",
                RuntimeWarning,
                stacklevel=2,
            )
        return SSIMLoss()


def albedo_tv(albedo: Tensor) -> Tensor:
    """Mean absolute horizontal and vertical albedo differences (total variation)."""
    a = albedo.float()
    return (a[..., 1:, :] - a[..., :-1, :]).abs().mean() + (a[..., :, 1:] - a[..., :, :-1]).abs().mean()


def grey_shading(shading: Tensor) -> Tensor:
    """Mean squared deviation of the shading's RGB channels from their per-pixel mean (near-grey light)."""
    s = shading.float()
    return (s - s.mean(dim=1, keepdim=True)).pow(2).mean()


def albedo_normal_covariance(albedo: Tensor, normal: Tensor) -> Tensor:
    """Squared Frobenius norm of the per-image cross-covariance between albedo and normal channels, over
    pixels, averaged over the batch (albedo should not encode geometry)."""
    a = albedo.float().flatten(2)
    n = normal.float().flatten(2)
    a = a - a.mean(dim=2, keepdim=True)
    n = n - n.mean(dim=2, keepdim=True)
    cov = torch.einsum("bip,bjp->bij", a, n) / a.shape[2]
    return cov.pow(2).sum(dim=(1, 2)).mean()


def _subsample(x: Tensor, size) -> Tensor:
    """Nearest subsampling of a label map to ``size`` at the centres of the s x s cells (keeps the
    invalid-pixel zeros exact); returns ``x`` when it already has that size or is not a multiple."""
    h, w = int(size[0]), int(size[1])
    if tuple(x.shape[-2:]) == (h, w) or x.shape[-2] % h or x.shape[-1] % w:
        return x
    sh, sw = x.shape[-2] // h, x.shape[-1] // w
    return x[..., sh // 2 :: sh, sw // 2 :: sw]


def physics_regularisers(
    decoded: Mapping[str, Tensor], batch: Mapping[str, Tensor], weights: Mapping[str, float] = PHYSICS_WEIGHTS
) -> dict[str, Tensor]:
    """The weighted physics regularisers of hard grounding (terms with weight 0 are skipped)."""
    out: dict[str, Tensor] = {}
    if weights.get("albedo_tv", 0.0):
        out["albedo_tv"] = weights["albedo_tv"] * albedo_tv(decoded["albedo"])
    if weights.get("grey_shading", 0.0):
        out["grey_shading"] = weights["grey_shading"] * grey_shading(decoded["shading"])
    if weights.get("albedo_normal_cov", 0.0):
        out["albedo_normal_cov"] = weights["albedo_normal_cov"] * albedo_normal_covariance(
            decoded["albedo"], decoded["normal_phys"]
        )
    if weights.get("geometry", 0.0) and "normal" in batch and batch["normal"].dim() == 4:
        pred = decoded["normal_phys"]
        target = _subsample(batch["normal"], pred.shape[-2:])
        if target.shape == pred.shape:
            out["geometry"] = weights["geometry"] * normal_loss(pred, target)
    return out


def class_balance_weights(batch: Mapping[str, Tensor] | None, size) -> Tensor | None:
    """Per-pixel weights (B, h, w) at the render resolution ``size`` that give every segmentation class
    present in the batch the same total weight (mean weight 1; void pixels 0), or ``None`` when the
    batch has no segmentation labels.

    Why: the photometric L1 of Eq. 14 averages over pixels, and on ShadedScenes the ground is ~86 % of
    them. A decoder then lowers most of its loss by painting the ground and leaving the objects as a
    blur: the region palette's colours all drift to the ground's, which is the collapse seen with the
    plain L1. Balancing by class makes each object class count as much as the ground. The labels are
    used only to weight the pixels; the decoder still reads z_s and z_p only.
    """
    if batch is None or "segmentation" not in batch or batch["segmentation"].dim() != 3:
        return None
    seg = _subsample(batch["segmentation"], size)
    if tuple(seg.shape[-2:]) != tuple(int(v) for v in size):
        seg = F.interpolate(seg[:, None].float(), size=tuple(int(v) for v in size), mode="nearest")[
            :, 0
        ].long()
    seg = seg.long()
    valid = seg >= 0
    if not bool(valid.any()):
        return None
    ids = torch.where(valid, seg, 0)
    counts = torch.bincount(ids[valid], minlength=int(ids.max()) + 1).float()
    present = int((counts > 0).sum())
    w = torch.where(valid, 1.0 / counts.clamp_min(1.0)[ids], 0.0)
    return w * (valid.sum() / present)  # each present class sums to n_valid / n_classes


def reconstruction_loss(
    decoded: Mapping[str, Tensor],
    image: Tensor,
    batch: Mapping[str, Tensor] | None = None,
    perceptual: nn.Module | None = None,
    perceptual_weight: float = 0.1,
    physics_weights: Mapping[str, float] = PHYSICS_WEIGHTS,
    balance: str = "none",
) -> tuple[Tensor, dict[str, float]]:
    """L_rec (Eq. 14 for hard grounding, Eq. 15 for soft grounding) and its parts as floats.

    ``balance="class"`` weights the photometric L1 so that every segmentation class of the batch counts
    the same (:func:`class_balance_weights`; plain L1 when the batch has no segmentation).
    The parts include ``rec_ratio`` = MSE(recon) / MSE(each image's own mean colour), in linear RGB at
    the render resolution: the share of the image's variance the decoder leaves unexplained (1 = no
    better than a flat colour; the trivial reconstruction scores exactly 1).

    ``decoded`` is ``model.decode(z_s, z_p)``; the physics regularisers apply when it has an ``albedo``.
    The comparison happens at the decoder's render resolution (the size of ``recon_linear``): the input
    is decoded to linear RGB and area-averaged to that size (the physically right downsampling).
    """
    if "recon" not in decoded:
        raise KeyError(f"reconstruction_loss: the decoder output needs 'recon'; got {sorted(decoded)}")
    if decoded["recon"].shape != image.shape:
        raise ValueError(
            f"reconstruction_loss: recon {tuple(decoded['recon'].shape)} and image "
            f"{tuple(image.shape)} differ"
        )
    recon_lin = decoded.get("recon_linear", None)
    recon_lin = srgb_to_linear(decoded["recon"]).float() if recon_lin is None else recon_lin.float()
    target_lin = srgb_to_linear(image.float())
    if recon_lin.shape[-2:] != target_lin.shape[-2:]:
        target_lin = F.adaptive_avg_pool2d(target_lin, (recon_lin.shape[-2], recon_lin.shape[-1]))
    weights = class_balance_weights(batch, recon_lin.shape[-2:]) if balance == "class" else None
    if weights is None:
        l1 = F.l1_loss(recon_lin, target_lin)  # Eq. 14: L1 in linear RGB
    else:  # Eq. 14's L1, every class present in the batch weighing the same (see class_balance_weights)
        l1 = ((recon_lin - target_lin).abs().mean(dim=1) * weights).mean()
    total = l1
    # the trivial reconstruction for comparison: each image's own mean colour. rec_ratio = MSE(recon) /
    # MSE(flat) is the share of the image's variance around its mean colour the decoder leaves unexplained
    # (1 = no content; the objective gates CFA on it). MSE, not L1: the objects are a few per cent of the
    # pixels but most of the variance, while L1 is dominated by the ground's texture and noise.
    with torch.no_grad():
        flat = target_lin.mean(dim=(2, 3), keepdim=True).expand_as(target_lin)
        ratio = F.mse_loss(recon_lin, target_lin) / F.mse_loss(flat, target_lin).clamp_min(1e-12)
    parts: dict[str, Tensor] = {"rec_l1": l1.detach(), "rec_ratio": ratio}
    if perceptual is not None and perceptual_weight > 0:
        # Eq. 14: + LPIPS (or its SSIM fallback), on sRGB images at the render resolution
        p = perceptual(linear_to_srgb(recon_lin), linear_to_srgb(target_lin))
        total = total + perceptual_weight * p
        parts[f"rec_{getattr(perceptual, 'name', 'perceptual')}"] = p.detach()
    if "albedo" in decoded:
        for name, term in physics_regularisers(decoded, batch or {}, physics_weights).items():
            total = total + term
            parts[f"rec_{name}"] = term.detach()
    return total, as_floats(parts)  # one read-back from the device for all the parts
