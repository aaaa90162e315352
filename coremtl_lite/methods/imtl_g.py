"""IMTL-G: Liu, Li, Kuang, Xue, Chen, Yang, Liao & Zhang, "Towards Impartial Multi-task Learning", ICLR 2021."""

from __future__ import annotations

import torch
from torch import Tensor

from coremtl_lite.methods._weighted import WeightedAggregator
from coremtl_lite.methods.base import register


@register("imtl_g")
class IMTLG(WeightedAggregator):
    """IMTL-G (Liu et al. 2021, §3.2, Eq. 7-8): the direction ``d = sum_t a_t g_t`` with
    ``sum_t a_t = 1`` whose projections onto every unit gradient ``u_t = g_t / ||g_t||`` are equal.

    Closed form (Eq. 8): with ``D`` = rows ``g_1 - g_t`` and ``U`` = rows ``u_1 - u_t`` (t = 2..T),
    ``a_{2:T} = g_1 U^T (D U^T)^{-1}`` and ``a_1 = 1 - sum_{t>=2} a_t``. A pseudo-inverse replaces the
    inverse so that linearly dependent gradients do not break it. torchjd computes the same weights
    from the Gramian as ``G^+ (||g_t||)_t`` normalised to sum one (tested: equal for full-rank J).
    """

    def weights(self, jacobian: Tensor) -> Tensor:
        j = jacobian.detach().double()
        if j.shape[0] == 1:
            return torch.ones(1, dtype=torch.float64)
        u = j / j.norm(dim=1, keepdim=True).clamp_min(1e-12)
        d = j[0] - j[1:]  # rows g_1 - g_t
        uu = u[0] - u[1:]  # rows u_1 - u_t
        rest = (j[0] @ uu.T) @ torch.linalg.pinv(d @ uu.T)  # Eq. 8
        return torch.cat([1.0 - rest.sum().reshape(1), rest]).cpu()
