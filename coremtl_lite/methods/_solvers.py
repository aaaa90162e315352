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


def min_norm_simplex(
    g: np.ndarray, solver: str = "quadprog", eps: float = 1e-3, max_iters: int = 100
) -> np.ndarray:
    """Weights of the min-norm point of the convex hull of J's rows (Sener & Koltun 2018, MGDA Eq. 3).

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


def cosine_gramian(g: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Split the Gramian as ``G = N C N``: row norms ``n`` (``N = diag(n)``), cosines ``C`` and a mask.

    Returns ``(n, c, nonzero)``: ``c`` is the cosine matrix of the *non-zero* task gradients only
    (``nonzero`` marks them; a task whose gradient is exactly zero has no direction). Working with
    C instead of G removes the scale of each gradient, so task-gradient norms that span many
    orders of magnitude do not spoil the conditioning of the solves below.
    """
    if g.ndim != 2 or g.shape[0] != g.shape[1]:
        raise ValueError(f"expected a square (T, T) Gramian, got shape {g.shape}")
    if not np.all(np.isfinite(g)):
        raise FloatingPointError("the Gramian has non-finite entries (NaN/inf gradients)")
    n = np.sqrt(np.clip(np.diag(g), 0.0, None))
    nonzero = n > 0.0
    m = n[nonzero]
    c = g[np.ix_(nonzero, nonzero)] / np.outer(m, m)
    c = np.clip(0.5 * (c + c.T), -1.0, 1.0)
    np.fill_diagonal(c, 1.0)
    return n, c, nonzero


def is_pareto_stationary(c: np.ndarray, tol: float = 1e-9) -> bool:
    """True when some convex combination of the unit gradients (cosine matrix ``c``) vanishes.

    By Gordan's alternative this is exactly the case where *no* direction d has ``<g_t, d> > 0`` for
    every task t. ``tol`` bounds the squared norm of the min-norm point of the unit gradients' hull.
    """
    if c.shape[0] == 0:
        return True
    a = min_norm_simplex(c)
    return float(a @ c @ a) <= tol


def fair_weights(g: np.ndarray, alpha: float, tol: float = 1e-12, max_iters: int = 200) -> np.ndarray:
    """Positive ``w`` solving ``G w = w^(-1/alpha)`` elementwise (FairGrad Eq. 4; Nash-MTL Eq. 2 for alpha=1).

    Every task's benefit ``<g_t, d>`` of the update ``d = J^T w`` equals ``w_t^(-1/alpha)``. With
    ``p = 1/alpha`` and ``G = N C N`` (:func:`cosine_gramian`), the substitution ``u = N w`` turns the
    equation into ``C u = c * u^(-p)`` with coefficients ``c_t = n_t^(p-1)``: for Nash-MTL (p = 1)
    the gradient norms drop out entirely. That is the stationarity condition of the strictly convex

        F(u) = 1/2 u^T C u - sum_t c_t h(u_t),   h' = u^(-p)   (h = log for p = 1)

    (Navon et al. 2022, Claim 3.1 / Ban & Ji 2024, §3), minimised by damped Newton with a
    backtracking line search that keeps ``u > 0``. Its Hessian ``C + diag(p c u^(-p-1))`` is positive
    definite even when the gradients are linearly dependent, so no ridge is added to G: the
    equation itself is solved (componentwise relative residual below ``tol`` when it converges).

    Degenerate cases, where the equation has no positive solution:

    * a task whose gradient is exactly zero gets weight 0 (it has nothing to gain from any update);
      the others are solved among themselves;
    * if the remaining unit gradients are Pareto-stationary (some convex combination vanishes,
      e.g. two opposite gradients, or all gradients zero), no update improves every task (Gordan's
      alternative), the bargaining problem has no solution and all weights are 0: a zero step.
    """
    if alpha <= 0:
        raise ValueError(f"alpha must be > 0, got {alpha}")
    n, cos, nonzero = cosine_gramian(g)
    w = np.zeros(g.shape[0])
    if not nonzero.any() or is_pareto_stationary(cos):
        return w
    p = 1.0 / alpha
    coef = n[nonzero] ** (p - 1.0)

    def h(u: np.ndarray) -> np.ndarray:
        return np.log(u) if p == 1.0 else u ** (1.0 - p) / (1.0 - p)

    def objective(u: np.ndarray) -> float:
        return 0.5 * u @ cos @ u - coef @ h(u)

    def residual(u: np.ndarray) -> np.ndarray:  # relative: (C u)_t / (c_t u_t^-p) - 1
        benefit = coef * u ** (-p)
        return (cos @ u - benefit) / benefit

    u = coef ** (1.0 / (1.0 + p))  # exact when the gradients are orthogonal (C = I)
    for _ in range(max_iters):
        r = residual(u)
        if np.max(np.abs(r)) < tol:
            break
        grad = cos @ u - coef * u ** (-p)
        hess = cos + np.diag(p * coef * u ** (-p - 1.0))
        step = -np.linalg.solve(hess, grad)
        f0, slope, s = objective(u), grad @ step, 1.0
        while s > 1e-12:  # backtrack: stay in u > 0, and decrease F (or, near the end, the residual)
            new = u + s * step
            if np.all(new > 0.0) and (
                objective(new) <= f0 + 1e-4 * s * slope or np.linalg.norm(residual(new)) < np.linalg.norm(r)
            ):
                break
            s *= 0.5
        u = u + s * step
    w[nonzero] = u / n[nonzero]
    return w
