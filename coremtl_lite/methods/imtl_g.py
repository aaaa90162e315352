"""IMTL-G: Liu, Li, Kuang, Xue, Chen, Yang, Liao & Zhang, "Towards Impartial Multi-task Learning", ICLR 2021."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from coremtl_lite.methods._solvers import cosine_gramian, gramian
from coremtl_lite.methods._weighted import WeightedAggregator
from coremtl_lite.methods.base import register


@register("imtl_g")
class IMTLG(WeightedAggregator):
    """IMTL-G (Liu et al. 2021, §3.2, IMTL-G Eq. 7-8): the direction ``d = sum_t a_t g_t`` with
    ``sum_t a_t = 1`` whose projections onto every unit gradient ``u_t = g_t / ||g_t||`` are equal.

    Solved on the Gramian. Write ``G = N C N`` (``N = diag(||g_t||)``, C the cosine matrix) and
    ``b = N a``; then ``d = sum_t b_t u_t`` and the projections are ``(u_t^T d)_t = C b``. Equal
    projections ``C b = lambda 1`` give ``b ∝ C^{-1} 1``, i.e. ``a ∝ N^{-1} C^{-1} 1 = G^{-1} n``,
    normalised to sum one. This is the paper's closed form IMTL-G Eq. 8 (``a_{2:T} = g_1 U^T (D U^T)^{-1}``)
    written symmetrically, and torchjd's ``G^+ n`` for full-rank J (both tested).

    Rank-deficient J (the rank-deficient limit). When the gradients are linearly dependent, C is
    singular and ``C b = lambda 1`` has a whole affine family of solutions b. Every one gives the
    same *direction* d (a null vector v of C has ``sum_t v_t u_t = 0``), but the normalisation
    ``sum_t b_t / n_t = 1`` then fixes a different length. We take ``b = lambda C^+ 1`` (the
    minimum-norm solution, least squares if 1 is not in C's range), continuous with the full-rank
    formula. For two parallel gradients ``g_2 = k g_1`` (k > 0) this is exactly the limit of the
    full-rank solution for ``g_2 = k g_1 + eps h`` as eps -> 0, whatever h: expanding the equal-
    projection condition to second order in eps gives ``a_1 / a_2 = k``, so ``a = (k, 1) / (1 + k)``
    and ``d = 2k / (1 + k) g_1`` -- the harmonic mean of the two norms along the common direction,
    ``d = g_1`` when the gradients are equal, never zero. ``G^+ n`` on the raw Gramian would give
    ``a ∝ n`` instead, which is not that limit. Eigenvalues of C below ``rcond`` times the largest
    count as exact dependence (angles below about 1e-4 rad).

    Further edge cases: a task with an exactly zero gradient has no direction and gets weight 0;
    if ``C^+ 1`` vanishes (e.g. two opposite gradients: the only direction with equal projections on
    u and -u is 0) or its weights sum to about zero, the update is zero.
    """

    def __init__(self, task_names, on_features: bool = False, rcond: float = 1e-8):
        super().__init__(task_names, on_features=on_features)
        if not 0.0 <= rcond < 1.0:
            raise ValueError(f"imtl_g: rcond must be in [0, 1), got {rcond}")
        self.rcond = float(rcond)

    def weights(self, jacobian: Tensor) -> Tensor:
        n, cos, nonzero = cosine_gramian(gramian(jacobian))
        a = np.zeros(len(n))
        if not nonzero.any():
            return torch.from_numpy(a)
        b = np.linalg.pinv(cos, rcond=self.rcond, hermitian=True) @ np.ones(len(cos))  # C b = lambda 1
        raw = b / n[nonzero]  # a = N^{-1} b, before normalisation
        total = raw.sum()
        if not np.isfinite(total) or abs(total) <= 1e-12 * np.abs(raw).sum():
            return torch.from_numpy(a)  # no non-zero direction has equal projections
        a[nonzero] = raw / total  # sum_t a_t = 1 (IMTL-G Eq. 8)
        return torch.from_numpy(a)
