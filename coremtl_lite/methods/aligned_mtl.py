"""Aligned-MTL: Senushkin, Patakin, Kuznetsov & Konushin,
"Independent Component Alignment for Multi-Task Learning", CVPR 2023."""

from __future__ import annotations

import torch
from torch import Tensor

from coremtl_lite.methods._weighted import WeightedAggregator
from coremtl_lite.methods.base import register


@register("aligned_mtl")
class AlignedMTL(WeightedAggregator):
    """Aligned-MTL (Senushkin et al. 2023, Algorithm 1, Aligned-MTL Eq. 10-12): make the task gradients an
    orthogonal system with equal singular values (condition number 1) before summing.

    Eigen-decompose the Gramian ``G = V diag(lambda) V^T`` (keeping the rank-r part above a
    numerical tolerance), form ``B = sqrt(lambda_min) V diag(lambda)^(-1/2) V^T`` and return
    ``d = (B w)^T J`` for the preference ``w`` (uniform ``1/T``). ``scale_mode`` picks the scale
    ``lambda_min`` ("min", the paper), the median or the mean eigenvalue ("rmse", as in the
    authors' released code). Matches torchjd's AlignedMTL (tested).
    """

    def __init__(self, task_names, on_features: bool = False, scale_mode: str = "min"):
        super().__init__(task_names, on_features=on_features)
        if scale_mode not in ("min", "median", "rmse"):
            raise ValueError(f"aligned_mtl: scale_mode must be min, median or rmse, got {scale_mode!r}")
        self.scale_mode = scale_mode

    def weights(self, jacobian: Tensor) -> Tensor:
        j = jacobian.detach().double().cpu()
        g = j @ j.T
        t = g.shape[0]
        pref = torch.full((t,), 1.0 / t, dtype=torch.float64)
        lam, v = torch.linalg.eigh(g)
        tol = lam.max() * t * torch.finfo(g.dtype).eps
        keep = lam > tol
        if not bool(keep.any()):
            return pref
        lam, v = lam[keep], v[:, keep]  # rank-r part
        scale = {"min": lam.min(), "median": lam.median(), "rmse": lam.mean()}[self.scale_mode]
        b = scale.sqrt() * v @ torch.diag(lam.rsqrt()) @ v.T  # Aligned-MTL Eq. 12: balance transformation
        return b @ pref
