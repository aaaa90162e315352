"""Small numerical solvers shared by the gradient-aggregation methods.

Every aggregator in this package works on the Gramian ``G = J J^T`` (T x T) of the task Jacobian
``J`` (T x P): the solvers below find a weight vector ``w`` (T,) and the method returns ``w @ J``.
Working in this T-dimensional weight space instead of the P-dimensional parameter space is exact
(every direction these methods produce lies in the row span of J) and makes the cost of the solve
independent of the model size. All solves run in float64 on the CPU.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor


def gramian(jacobian: Tensor) -> np.ndarray:
    """``J J^T`` as a float64 numpy array (the only statistic of J most aggregators need)."""
    if jacobian.dim() != 2:
        raise ValueError(f"expected a (T, P) Jacobian, got shape {tuple(jacobian.shape)}")
    j = jacobian.detach().double()
    return (j @ j.T).cpu().numpy()


def combine(weights: np.ndarray | Tensor, jacobian: Tensor) -> Tensor:
    """``w @ J``: the update direction for weights ``w`` (T,) in J's dtype and device."""
    w = torch.as_tensor(weights, dtype=jacobian.dtype, device=jacobian.device)
    return w @ jacobian


def _normalised(g: np.ndarray) -> tuple[np.ndarray, float]:
    """``G / s`` with ``s = trace(G) / T`` (the mean squared gradient norm) and ``s`` itself."""
    scale = float(np.trace(g)) / g.shape[0]
    if not np.isfinite(scale):
        raise FloatingPointError("the Gramian has non-finite entries (NaN/inf gradients)")
    if scale <= 0.0:
        return g.copy(), 0.0
    return g / scale, scale


def min_norm_simplex(g: np.ndarray, solver: str = "quadprog", eps: float = 1e-3,
                     max_iters: int = 100) -> np.ndarray:
    """Weights of the min-norm point of the convex hull of J's rows (Sener & Koltun 2018, Eq. 3).

    Solves ``min_{a in simplex} a^T G a``. ``solver="quadprog"`` solves the QP exactly (up to a
    1e-10 relative ridge that makes G positive definite); ``solver="frank_wolfe"`` is the paper's
    Algorithm 2, stopped when the step size falls below ``eps`` or after ``max_iters`` steps.
    """
    t = g.shape[0]
    if t == 1:
        return np.ones(1)
    gn, scale = _normalised(g)
    if scale == 0.0:  # every gradient is zero: any point of the simplex is optimal
        return np.full(t, 1.0 / t)
    if solver == "quadprog":
        import quadprog

        q = gn + 1e-10 * np.eye(t)
        constraints = np.concatenate([np.ones((t, 1)), np.eye(t)], axis=1)  # 1^T a = 1, a >= 0
        bounds = np.concatenate([[1.0], np.zeros(t)])
        a = quadprog.solve_qp(q, np.zeros(t), constraints, bounds, meq=1)[0]
        a = np.clip(a, 0.0, None)
        return a / a.sum()
    if solver == "frank_wolfe":
        a = np.full(t, 1.0 / t)
        for _ in range(max_iters):
            i = int(np.argmin(gn @ a))  # the vertex most opposed to the current point
            a_gi, a_ga, gi_gi = a @ gn[:, i], a @ gn @ a, gn[i, i]
            if gi_gi <= a_gi:
                gamma = 1.0
            elif a_ga <= a_gi:
                gamma = 0.0
            else:  # exact line search on the segment [a, e_i] (Algorithm 1 of the paper)
                gamma = (a_ga - a_gi) / (a_ga + gi_gi - 2.0 * a_gi)
            a = (1.0 - gamma) * a
            a[i] += gamma
            if gamma < eps:
                break
        return a
    raise ValueError(f"unknown min-norm solver {solver!r}; use 'quadprog' or 'frank_wolfe'")


def dual_cone_weights(g: np.ndarray, u: np.ndarray, reg_eps: float = 1e-4) -> np.ndarray:
    """Weights ``w`` with ``J^T w`` = projection of ``J^T u`` onto the dual cone {x: J x >= 0}.

    Quinton & Rey 2024, Prop. 1: the projection is ``J^T w`` with ``w = argmin_{v >= u} v^T G v``.
    Like torchjd, G is normalised by its trace and regularised with ``reg_eps * I`` so that the QP
    is strictly convex (this changes the answer by O(reg_eps) relative to the exact projection).
    """
    import quadprog

    t = g.shape[0]
    total = float(np.trace(g))
    gn = g / total if total >= 1e-4 else np.zeros_like(g)  # torchjd's normalize(G, eps=1e-4)
    q = gn + reg_eps * np.eye(t)
    return quadprog.solve_qp(q, np.zeros(t), np.eye(t), np.asarray(u, dtype=np.float64), meq=0)[0]


def fair_weights(g: np.ndarray, alpha: float, ridge: float = 1e-8, tol: float = 1e-10,
                 max_iters: int = 100) -> np.ndarray:
    """Positive ``w`` solving ``G w = w^(-1/alpha)`` elementwise (FairGrad Eq. 4; Nash-MTL for alpha=1).

    The equation is the stationarity condition of the strictly convex function
    ``F(w) = 1/2 w^T G w - sum_i h(w_i)`` with ``h' = w^(-1/alpha)`` (``h = log`` for alpha = 1,
    Navon et al. 2022, Claim 3.1 / Ban & Ji 2024, §3), so damped Newton with a backtracking line
    search that keeps ``w > 0`` finds the unique solution. G is first divided by
    ``s = trace(G)/T`` for conditioning and the solution rescaled by ``s^(-alpha/(1+alpha))``; a
    ``ridge * I`` keeps the problem bounded when the gradients are linearly dependent.
    """
    if alpha <= 0:
        raise ValueError(f"alpha must be > 0, got {alpha}")
    t = g.shape[0]
    gn, scale = _normalised(g)
    if scale == 0.0:
        raise FloatingPointError("all task gradients are zero: the fair weights are undefined")
    gn = gn + ridge * np.eye(t)
    p = 1.0 / alpha

    def objective(w: np.ndarray) -> float:
        h = np.log(w).sum() if alpha == 1.0 else (w ** (1.0 - p)).sum() / (1.0 - p)
        return 0.5 * w @ gn @ w - h

    w = np.ones(t)
    for _ in range(max_iters):
        grad = gn @ w - w ** (-p)
        if np.linalg.norm(grad) < tol:
            break
        hess = gn + np.diag(p * w ** (-p - 1.0))
        step = -np.linalg.solve(hess, grad)
        f0, slope, s = objective(w), grad @ step, 1.0
        while np.any(w + s * step <= 0.0) or objective(w + s * step) > f0 + 1e-4 * s * slope:
            s *= 0.5
            if s < 1e-12:
                break
        w = w + s * step
    return w * scale ** (-alpha / (1.0 + alpha))
