"""Linear CKA, the independence measure Indep(z_s, z_p) of CORE-MTL (paper Eq. 11; paper Eq. 28 in Appendix B).

Linear centred kernel alignment (Kornblith et al., 2019) between a batch of features ``X`` (n, d1)
and ``Y`` (n, d2), with columns centred over the batch::

    CKA(X, Y) = ||Y^T X||_F^2 / (||X^T X||_F * ||Y^T Y||_F)          (paper Eq. 11 / paper Eq. 28)

It lies in [0, 1], is invariant to orthogonal transforms and isotropic scaling of either side, and is
0 when the two sides are linearly uncorrelated. CORE-MTL minimises it between the spatially pooled
semantic stream and the residual stream; callers pool (n, C, h, w) maps to (n, C) first.

Numerical safety: a side *without variance* -- batch size 1, or every column
constant over the batch -- has no defined CKA; this module defines the value as **0** there (nothing
to be dependent on), with zero, finite gradients. Each side is rescaled to unit Frobenius norm
before the Gram products, so tiny or huge feature magnitudes neither underflow nor overflow.

Equation numbers are the CORE-MTL paper's; docs/method.md states each one (label ``eq-N``).
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["gram_cka", "linear_cka"]


def _check_pair(x: Tensor, y: Tensor, fn: str) -> None:
    if not isinstance(x, Tensor) or not isinstance(y, Tensor):
        raise TypeError(f"{fn} expects torch tensors, got {type(x).__name__} and {type(y).__name__}")
    if x.dim() != 2 or y.dim() != 2:
        raise ValueError(
            f"{fn} expects 2-d features (n, d); got x of shape {tuple(x.shape)} and y of shape "
            f"{tuple(y.shape)} (pool (n, C, h, w) maps over h, w first)"
        )
    if x.shape[0] != y.shape[0]:
        raise ValueError(
            f"{fn}: x and y must have the same batch size n; got x {tuple(x.shape)}, y {tuple(y.shape)}"
        )
    if x.shape[0] == 0:
        raise ValueError(f"{fn}: empty batch (n = 0), x {tuple(x.shape)}")


def _centre_and_normalise(a: Tensor, eps: float) -> tuple[Tensor, Tensor]:
    """Column-centre ``a`` and scale it to unit Frobenius norm; also return whether it has variance.

    A side counts as having no variance when its centred sum of squares is at most ``eps`` times its
    uncentred sum of squares (relative, so a constant column whose centring leaves only round-off
    counts as constant), or is exactly zero.
    """
    centred = a - a.mean(dim=0, keepdim=True)  # column centring of paper Eq. 11 (H X with H = I - 11^T/n)
    ss = centred.pow(2).sum()
    scale = a.detach().pow(2).sum()
    has_var = ss > eps * scale + torch.finfo(a.dtype).tiny
    # sqrt(1) where there is no variance: keeps the backward pass free of 0 * inf = NaN.
    norm = torch.sqrt(torch.where(has_var, ss, torch.ones_like(ss)))
    return centred / norm, has_var


def linear_cka(x: Tensor, y: Tensor, eps: float = 1e-10) -> Tensor:
    """Linear CKA between features ``x`` (n, d1) and ``y`` (n, d2): paper Eq. 11 (paper Eq. 28 in Appendix B).

    Differentiable; works in float32 and float64 (the result has the inputs' promoted dtype).

    Args:
        x: (n, d1) batch of features (e.g. the spatially pooled semantic stream Z_s).
        y: (n, d2) batch of features (e.g. the residual stream Z_p).
        eps: relative variance threshold: a side whose centred sum of squares is <= ``eps`` x its
            uncentred sum of squares is treated as constant.

    Returns:
        A scalar tensor in [0, 1]. It is defined as 0 (with zero gradient) when either side has no
        variance over the batch (n = 1, or constant columns), so it is never NaN.
    """
    _check_pair(x, y, "linear_cka")
    dtype = torch.promote_types(x.dtype, y.dtype)
    if not dtype.is_floating_point:
        dtype = torch.get_default_dtype()
    xn, x_ok = _centre_and_normalise(x.to(dtype), eps)
    yn, y_ok = _centre_and_normalise(y.to(dtype), eps)
    hsic_xy = (yn.T @ xn).pow(2).sum()  # ||Y^T X||_F^2          (paper Eq. 11 numerator)
    hsic_xx = (xn.T @ xn).pow(2).sum()  # ||X^T X||_F^2
    hsic_yy = (yn.T @ yn).pow(2).sum()  # ||Y^T Y||_F^2
    ok = x_ok & y_ok
    denom = torch.sqrt(
        torch.where(ok, hsic_xx * hsic_yy, torch.ones_like(hsic_xx))
    )  # paper Eq. 11 denominator
    return torch.where(ok, hsic_xy / denom, torch.zeros_like(hsic_xy))


def gram_cka(x: Tensor, y: Tensor, eps: float = 1e-10) -> Tensor:
    """Linear CKA in its kernel (HSIC) form, the O(n^2) reference for :func:`linear_cka`.

    With linear Gram matrices K = X X^T, L = Y Y^T and the centring matrix H = I - 11^T / n,
    CKA = HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L)) with HSIC(K, L) = tr(K H L H) (Kornblith et al.
    2019, Kornblith Eq. 3-4). Equal to paper Eq. 11 because tr(K H L H) = ||(HY)^T (HX)||_F^2. Same conventions as
    :func:`linear_cka` (0 when a side has no variance).
    """
    _check_pair(x, y, "gram_cka")
    dtype = torch.promote_types(x.dtype, y.dtype)
    if not dtype.is_floating_point:
        dtype = torch.get_default_dtype()
    x, y = x.to(dtype), y.to(dtype)
    n = x.shape[0]
    h = torch.eye(n, dtype=dtype, device=x.device) - 1.0 / n
    k = h @ (x @ x.T) @ h  # centred Gram matrices H K H and H L H
    gram_l = h @ (y @ y.T) @ h
    hsic_kl = (k * gram_l).sum()  # tr(K H L H) = <HKH, HLH>_F
    hsic_kk = (k * k).sum()
    hsic_ll = (gram_l * gram_l).sum()
    x_ok = torch.diagonal(k).sum() > eps * x.detach().pow(2).sum() + torch.finfo(dtype).tiny
    y_ok = torch.diagonal(gram_l).sum() > eps * y.detach().pow(2).sum() + torch.finfo(dtype).tiny
    ok = x_ok & y_ok
    denom = torch.sqrt(torch.where(ok, hsic_kk * hsic_ll, torch.ones_like(hsic_kk)))
    return torch.where(ok, hsic_kl / denom, torch.zeros_like(hsic_kl))
