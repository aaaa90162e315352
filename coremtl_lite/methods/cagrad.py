"""CAGrad: Liu, Liu, Jin, Stone & Liu, "Conflict-Averse Gradient Descent for Multi-task Learning", NeurIPS 2021."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from coremtl_lite.methods._solvers import gramian
from coremtl_lite.methods._weighted import WeightedAggregator
from coremtl_lite.methods.base import register


@register("cagrad")
class CAGrad(WeightedAggregator):
    """CAGrad (Liu et al. 2021, CAGrad Eq. 5 and its dual, Algorithm 1): maximise the worst task's local
    improvement within a ball of radius ``c ||g0||`` around the mean gradient ``g0``.

    The dual is ``min_{w in simplex} g_w^T g0 + sqrt(phi) ||g_w||`` with ``g_w = J^T w`` and
    ``sqrt(phi) = c ||g0||``; the update is ``d = g0 + sqrt(phi) / ||g_w|| g_w``. In Gramian terms the
    objective is ``w^T G 1/T + c ||g0|| sqrt(w^T G w)``, solved with SLSQP like the authors' code.
    ``rescale`` follows the official code: 0 returns ``d``, 1 (default) ``d / (1 + c^2)``,
    2 ``d / (1 + c)``. torchjd's CAGrad returns the unrescaled ``d`` (rescale=0; tested) and solves
    the dual with cvxpy/Clarabel. If ``||g_w||`` vanishes (a Pareto-stationary point) the update is
    zero, as in torchjd.
    """

    def __init__(self, task_names, on_features: bool = False, c: float = 0.5, rescale: int = 1):
        super().__init__(task_names, on_features=on_features)
        if c < 0:
            raise ValueError(f"cagrad: c must be >= 0, got {c}")
        if rescale not in (0, 1, 2):
            raise ValueError(f"cagrad: rescale must be 0, 1 or 2, got {rescale}")
        self.c, self.rescale = float(c), int(rescale)

    def weights(self, jacobian: Tensor) -> Tensor:
        from scipy.optimize import minimize

        g = gramian(jacobian)
        t = g.shape[0]
        total = float(np.trace(g))
        if total < 1e-12:
            return torch.zeros(t, dtype=torch.float64)
        g = g / total  # the weights are invariant to the scale of G; this conditions the solve
        b = g @ np.full(t, 1.0 / t)  # G 1/T: inner products of each g_t with g0
        sqrt_phi = self.c * float(np.sqrt(max(np.full(t, 1.0 / t) @ b, 0.0)))  # c ||g0||

        def objective(w):
            gw = np.sqrt(max(w @ g @ w, 1e-18))
            return w @ b + sqrt_phi * gw, b + sqrt_phi * (g @ w) / gw

        res = minimize(
            objective,
            np.full(t, 1.0 / t),
            jac=True,
            method="SLSQP",
            bounds=[(0.0, 1.0)] * t,
            constraints=({"type": "eq", "fun": lambda w: w.sum() - 1.0, "jac": lambda w: np.ones(t)},),
            options={"ftol": 1e-14, "maxiter": 500},
        )
        w = np.clip(res.x, 0.0, None)
        w = w / w.sum()
        gw_norm = float(np.sqrt(max(w @ g @ w, 0.0)))
        if gw_norm < 1e-4:  # torchjd's norm_eps on the normalised Gramian
            return torch.zeros(t, dtype=torch.float64)
        weights = np.full(t, 1.0 / t) + (sqrt_phi / gw_norm) * w  # d = g0 + sqrt(phi)/||g_w|| g_w
        scale = {0: 1.0, 1: 1.0 + self.c**2, 2: 1.0 + self.c}[self.rescale]
        return torch.from_numpy(weights / scale)
