"""The theory of paper §2 (appendices A-D) as code: the linear-Gaussian SCM and its closed forms.

Everything here is NumPy, seeded (``seed`` ints or ``np.random.Generator``), and the scalar closed
forms broadcast over NumPy arrays. The module is the test oracle for the rest of the package and
the engine of ``tutorials/01_scm_theory.ipynb``.

**The SCM (Assumption 2.2).** Independent latents s ~ N(0, var_s I) (semantics, dimension dim_s)
and r ~ N(0, var_r I) (residual / nuisance, dimension dim_r). The encoder outputs
z = R(theta) [s; r], where R(theta) rotates each semantic coordinate s_i with the residual
coordinate r_i by the *entanglement angle* theta (i < min(dim_s, dim_r)); unpaired coordinates are
left alone. The first dim_s coordinates of z are the *semantic stream* z_s = cos(theta) s + sin(theta) r
(Eq. 18 of Appendix A, coordinate-wise) -- the representation the task heads read -- and the last
dim_r the *residual stream* z_p = -sin(theta) s + cos(theta) r. theta = 0 is a disentangled encoder.
A domain shift changes var_r only (source var_r -> target var_r'); the law of s and of y | s is fixed.

Heads read z_s only. (A linear head on the *whole* z could undo the rotation, since R(theta) is
invertible; Theorem 2.3 is about the representation the heads are given, which is z_s here.)

**What is in the module.**

* :class:`LinearGaussianSCM` -- sampling, the rotation, the least-squares head, population risks and
  the OOD gap for the vector model with linear tasks y = A s.
* :func:`least_squares_head`, :func:`ood_gap` -- the closed forms of Appendix A (Eq. 22, 26-27);
  :func:`ood_gap_monte_carlo` -- the same gap measured by fitting a head on samples.
* :func:`gaussian_w1`, :func:`leakage_coefficient_linear`, :func:`disentangled_bound`,
  :func:`disentangled_bound_check` -- Theorem 2.4 (Eq. 8-9) for the linear SCM.
* :func:`cka_closed_form`, :func:`cka_vs_theta` -- Lemma B.1: linear CKA between the two streams.
* :func:`gradient_cosine_vs_independence` -- Proposition 2.5 (Eq. 10) measured.
* :func:`train_two_linear_tasks` (with an inline :func:`pcgrad_combine`) -- Theorem 2.3 in action:
  equal weighting and PCGrad reach the same OOD floor; theta = 0 removes it.
* :func:`gap_figure_data` -- what the tutorial's theta / shift widget redraws.

Equation numbers are the CORE-MTL paper's; docs/method.md states each one (label ``eq-N``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

__all__ = [
    "DEFAULT_VAR_R",
    "DEFAULT_VAR_S",
    "LinearGaussianSCM",
    "SCMSample",
    "cka_closed_form",
    "cka_vs_theta",
    "disentangled_bound",
    "disentangled_bound_check",
    "gap_figure_data",
    "gaussian_w1",
    "gradient_cosine_vs_independence",
    "leakage_coefficient_from_matrix",
    "leakage_coefficient_linear",
    "least_squares_head",
    "linear_cka_numpy",
    "monte_carlo_risks",
    "ood_gap",
    "ood_gap_monte_carlo",
    "pcgrad_combine",
    "train_two_linear_tasks",
]

#: Default semantic and residual variances used by the tutorial. They differ on purpose: with
#: var_s == var_r a rotation of an isotropic Gaussian is again isotropic, so the two streams stay
#: independent for every theta and CKA cannot see the entanglement (see :func:`cka_closed_form`).
DEFAULT_VAR_S = 1.0
DEFAULT_VAR_R = 0.25


def _rng(seed: int | np.random.Generator | None) -> np.random.Generator:
    if isinstance(seed, np.random.Generator):
        return seed
    if seed is None:
        raise ValueError("a seed (int) or an np.random.Generator is required: every random thing is seeded")
    return np.random.default_rng(seed)


def _positive(**values: float | np.ndarray) -> None:
    for name, value in values.items():
        arr = np.asarray(value, dtype=float)
        if not np.all(arr > 0):
            raise ValueError(f"{name} must be > 0, got {value!r}")


# ----------------------------------------------------------------------------------------- the SCM
class SCMSample(NamedTuple):
    """One draw of the SCM: latents ``s`` (n, dim_s), ``r`` (n, dim_r), representation ``z`` (n, dim_s +
    dim_r) and labels ``y`` (n, T)."""

    s: np.ndarray
    r: np.ndarray
    z: np.ndarray
    y: np.ndarray


@dataclass
class LinearGaussianSCM:
    """The linear-Gaussian SCM with entanglement of Assumption 2.2 (Eq. 6), in vector form.

    Args:
        dim_s: dimension of the semantic latent s.
        dim_r: dimension of the residual latent r.
        var_s: variance of each coordinate of s (Sigma_s = var_s I).
        var_r: source variance of each coordinate of r (Sigma_r = var_r I).
        theta: entanglement angle of R(theta) (0: disentangled).
        task: optional (T, dim_s) matrix A of linear tasks y = A s; ``None`` means y = s (A = I).
    """

    dim_s: int = 1
    dim_r: int = 1
    var_s: float = DEFAULT_VAR_S
    var_r: float = DEFAULT_VAR_R
    theta: float = np.pi / 4
    task: np.ndarray | None = None

    def __post_init__(self) -> None:
        if int(self.dim_s) != self.dim_s or self.dim_s < 1 or int(self.dim_r) != self.dim_r or self.dim_r < 1:
            raise ValueError(f"dim_s and dim_r must be positive ints, got {self.dim_s!r}, {self.dim_r!r}")
        _positive(var_s=self.var_s, var_r=self.var_r)
        if self.task is not None:
            self.task = np.atleast_2d(np.asarray(self.task, dtype=float))
            if self.task.shape[1] != self.dim_s:
                raise ValueError(f"task must have shape (T, dim_s={self.dim_s}), got {self.task.shape}")

    @property
    def task_matrix(self) -> np.ndarray:
        """The (T, dim_s) task matrix A (identity when ``task`` is None)."""
        return np.eye(self.dim_s) if self.task is None else self.task

    def rotation(self) -> np.ndarray:
        """R(theta) of Eq. 6: a (dim_s + dim_r) square rotation that mixes s_i with r_i by theta.

        Rows 0..dim_s-1 produce the semantic stream z_s_i = cos(theta) s_i + sin(theta) r_i (Eq. 18), rows
        dim_s.. the residual stream z_p_i = -sin(theta) s_i + cos(theta) r_i; det R = 1.
        """
        c, s = np.cos(self.theta), np.sin(self.theta)
        rot = np.eye(self.dim_s + self.dim_r)
        for i in range(min(self.dim_s, self.dim_r)):
            j = self.dim_s + i
            rot[i, i], rot[i, j] = c, s  # Eq. 18: z = cos(theta) s + sin(theta) r
            rot[j, i], rot[j, j] = -s, c
        return rot

    def sample(self, n: int, rng: int | np.random.Generator, var_r: float | None = None) -> SCMSample:
        """Draw n samples (s, r, z, y); ``var_r`` overrides the residual variance (a target domain)."""
        if int(n) != n or n < 1:
            raise ValueError(f"n must be a positive int, got {n!r}")
        var_r = self.var_r if var_r is None else var_r
        _positive(var_r=var_r)
        gen = _rng(rng)
        s = np.sqrt(self.var_s) * gen.standard_normal((n, self.dim_s))
        r = np.sqrt(var_r) * gen.standard_normal((n, self.dim_r))
        z = np.concatenate([s, r], axis=1) @ self.rotation().T  # Eq. 6: z = R(theta) [s; r]
        y = s @ self.task_matrix.T
        return SCMSample(s, r, z, y)

    def semantic_stream(self, z: np.ndarray) -> np.ndarray:
        """The semantic stream z_s: the first dim_s coordinates of z (what the heads read)."""
        return z[..., : self.dim_s]

    def residual_stream(self, z: np.ndarray) -> np.ndarray:
        """The residual stream z_p: the last dim_r coordinates of z."""
        return z[..., self.dim_s :]

    def _blocks(self) -> tuple[np.ndarray, np.ndarray]:
        rot = self.rotation()
        return rot[: self.dim_s, : self.dim_s], rot[: self.dim_s, self.dim_s :]  # z_s = M_s s + M_r r

    def optimal_head(self, var_r: float | None = None) -> np.ndarray:
        """Least-squares head B* (T, dim_s) on z_s for y = A s: B* = A Sigma_{s z_s} Sigma_{z_s}^-1.

        The vector form of Eq. 22 (Appendix A, Step 1); fitted on the domain with residual variance
        ``var_r`` (default: the source).
        """
        var_r = self.var_r if var_r is None else var_r
        m_s, m_r = self._blocks()
        cov_zz = self.var_s * m_s @ m_s.T + var_r * m_r @ m_r.T
        cov_sz = self.var_s * m_s.T  # Cov(s, z_s)
        return self.task_matrix @ np.linalg.solve(cov_zz.T, cov_sz.T).T

    def risk(self, head: np.ndarray, var_r: float | None = None) -> np.ndarray:
        """Population squared risk of each task for the linear head ``head`` (T, dim_s) on z_s (Eq. 2).

        E||y_t - b_t^T z_s||^2 = ||a_t - M_s^T b_t||^2 var_s + ||M_r^T b_t||^2 var_r (cross terms vanish
        because s and r are independent, Eq. 24-25). Returns shape (T,).
        """
        var_r = self.var_r if var_r is None else var_r
        head = np.atleast_2d(np.asarray(head, dtype=float))
        if head.shape != self.task_matrix.shape:
            raise ValueError(f"head must have shape {self.task_matrix.shape} (T, dim_s), got {head.shape}")
        m_s, m_r = self._blocks()
        sem = ((self.task_matrix - head @ m_s) ** 2).sum(axis=1) * self.var_s
        res = ((head @ m_r) ** 2).sum(axis=1) * var_r
        return sem + res

    def ood_gap(self, var_r_target: float, head: np.ndarray | None = None) -> np.ndarray:
        """Per-task domain gap Delta_t = R_target - R_source (Eq. 3) of ``head`` (default: the
        source-optimal head), shape (T,)."""
        head = self.optimal_head() if head is None else head
        return self.risk(head, var_r_target) - self.risk(head)

    def leakage(self) -> float:
        """Leakage coefficient (Eq. 8) of the semantic stream: the spectral norm of dz_s/dr = |sin theta|."""
        return leakage_coefficient_from_matrix(self.rotation(), self.dim_s)


# ----------------------------------------------------------------------- Theorem 2.3 (Appendix A)
def least_squares_head(theta, var_s, var_r):
    """Source-optimal scalar head w* of Appendix A, Step 1 (Eq. 22); broadcasts over NumPy arrays.

    For y = s, z = cos(theta) s + sin(theta) r and yhat = w z fitted by least squares on the source::

        w* = cos(theta) var_s / (cos^2(theta) var_s + sin^2(theta) var_r)
    """
    theta, var_s, var_r = np.asarray(theta, float), np.asarray(var_s, float), np.asarray(var_r, float)
    c, s = np.cos(theta), np.sin(theta)
    return c * var_s / (c**2 * var_s + s**2 * var_r)  # Eq. 22


def ood_gap(theta, var_s, var_r_source, var_r_target):
    """Closed-form OOD gap R_target - R_source of the source-optimal head (Appendix A, Eq. 26-27).

    Delta = w*^2 sin^2(theta) (var_r' - var_r)
          = cos^2 sin^2 var_s^2 (var_r' - var_r) / (cos^2 var_s + sin^2 var_r)^2,
    > 0 whenever sin(theta) != 0, cos(theta) != 0 and var_r' > var_r: the OOD floor of Theorem 2.3
    that no task weighting removes (Remark 2). Broadcasts over NumPy arrays.
    """
    theta = np.asarray(theta, float)
    var_s, vr, vt = (np.asarray(v, float) for v in (var_s, var_r_source, var_r_target))
    c2, s2 = np.cos(theta) ** 2, np.sin(theta) ** 2
    return c2 * s2 * var_s**2 * (vt - vr) / (c2 * var_s + s2 * vr) ** 2  # Eq. 27


def monte_carlo_risks(theta, var_s, var_r_source, var_r_target, n: int, seed) -> dict[str, np.ndarray]:
    """Fit the scalar head by least squares on n source samples and measure its risks on fresh samples.

    The Monte-Carlo counterpart of Appendix A: draw a training set (s, r) from the source, fit
    w_hat = sum(z y) / sum(z^2), then evaluate the squared risk on n fresh test samples of the source
    and of the target. Source and target test sets share the same standard-normal draws (common random
    numbers: r_target = sqrt(var_r' / var_r) r_source), which leaves each risk estimate unbiased and
    makes their difference precise.

    The sample sums are computed once from the draws and then combined in closed form for every
    (theta, variances) -- exactly what fitting on the samples gives, but broadcast over arrays of
    parameters at the cost of one pass over the data.

    Returns:
        dict with ``w_hat``, ``source_risk``, ``target_risk``, ``gap`` (broadcast shape of the inputs).
    """
    if int(n) != n or n < 2:
        raise ValueError(f"n must be an int >= 2, got {n!r}")
    theta = np.asarray(theta, float)
    var_s, vr, vt = (np.asarray(v, float) for v in (var_s, var_r_source, var_r_target))
    _positive(var_s=var_s, var_r_source=vr, var_r_target=vt)
    gen = _rng(seed)
    e_s, e_r = gen.standard_normal(n), gen.standard_normal(n)  # training draws
    t_s, t_r = gen.standard_normal(n), gen.standard_normal(n)  # test draws (shared by both domains)
    m_ss, m_rr, m_sr = e_s @ e_s / n, e_r @ e_r / n, e_s @ e_r / n
    q_ss, q_rr, q_sr = t_s @ t_s / n, t_r @ t_r / n, t_s @ t_r / n
    c, sn = np.cos(theta), np.sin(theta)
    sd_s, sd_r = np.sqrt(var_s), np.sqrt(vr)
    # least squares on z = c s + sn r, y = s (Eq. 17-18): w = <z, y> / <z, z>
    zy = c * var_s * m_ss + sn * sd_s * sd_r * m_sr
    zz = c**2 * var_s * m_ss + 2 * c * sn * sd_s * sd_r * m_sr + sn**2 * vr * m_rr
    w_hat = zy / zz
    a, b = 1.0 - w_hat * c, w_hat * sn  # y - w z = a s - b r

    def test_risk(var_r):
        sd = np.sqrt(var_r)
        return a**2 * var_s * q_ss - 2 * a * b * sd_s * sd * q_sr + b**2 * var_r * q_rr  # Eq. 23-24

    source, target = test_risk(vr), test_risk(vt)
    return {"w_hat": w_hat, "source_risk": source, "target_risk": target, "gap": target - source}


def ood_gap_monte_carlo(theta, var_s, var_r_source, var_r_target, n: int = 1_000_000, seed=0):
    """Monte-Carlo estimate of the OOD gap of :func:`ood_gap` (see :func:`monte_carlo_risks`)."""
    return monte_carlo_risks(theta, var_s, var_r_source, var_r_target, n, seed)["gap"]


# ----------------------------------------------------------------------- Theorem 2.4 (Appendix C)
def gaussian_w1(sigma_a, sigma_b):
    """Wasserstein-1 distance between N(0, sigma_a^2) and N(0, sigma_b^2) in one dimension.

    The quantile (monotone) coupling x_b = (sigma_b / sigma_a) x_a is optimal in 1-d, so
    W1 = E|sigma_a Z - sigma_b Z| = |sigma_a - sigma_b| E|Z| = |sigma_a - sigma_b| sqrt(2 / pi).
    Takes standard deviations, not variances. Broadcasts.
    """
    sigma_a, sigma_b = np.asarray(sigma_a, float), np.asarray(sigma_b, float)
    if np.any(sigma_a < 0) or np.any(sigma_b < 0):
        raise ValueError(f"standard deviations must be >= 0, got {sigma_a!r}, {sigma_b!r}")
    return np.abs(sigma_a - sigma_b) * np.sqrt(2.0 / np.pi)


def leakage_coefficient_linear(theta):
    """Leakage coefficient L_leak (Eq. 8) of the rotated encoder's semantic stream; broadcasts.

    Derivation: f_s(s, r) = cos(theta) s + sin(theta) r (coordinate-wise, Eq. 18), so
    f_s(s, r) - f_s(s, r') = sin(theta) (r - r') for every s, and the supremum over r != r' of
    ||f_s(s, r) - f_s(s, r')|| / ||r - r'|| is |sin(theta)|. (With dim_r > dim_s the unpaired residual
    coordinates do not enter z_s, and the supremum is still |sin theta|, attained on a paired
    direction.) L_leak = 0 exactly when theta = 0 (mod pi): a structurally disentangled encoder.
    """
    return np.abs(np.sin(np.asarray(theta, float)))  # Eq. 8 for f_s linear in r


def leakage_coefficient_from_matrix(encoder: np.ndarray, dim_s: int) -> float:
    """Leakage coefficient (Eq. 8) of any *linear* encoder z = E [s; r] whose first ``dim_s`` outputs
    are the semantic stream: the spectral norm of the block dz_s/dr = E[:dim_s, dim_s:]."""
    encoder = np.asarray(encoder, float)
    if encoder.ndim != 2 or not 0 < dim_s < encoder.shape[1]:
        raise ValueError(
            f"encoder must be a 2-d matrix with more than dim_s={dim_s} columns, got shape {encoder.shape}"
        )
    return float(np.linalg.norm(encoder[:dim_s, dim_s:], ord=2))


def disentangled_bound(source_risk, leakage, w1, K=1.0, lambda_star=0.0):
    """Right-hand side of Theorem 2.4 (Eq. 9): R_source(h) + K * L_leak * W1(P_S(r), P_T(r)) + lambda*.

    ``K`` is the Lipschitz constant of the loss composed with the head (w.r.t. z_s) and ``lambda_star``
    the capacity / joint-error term of Eq. 30. Broadcasts.
    """
    return (
        np.asarray(source_risk, float) + K * np.asarray(leakage, float) * np.asarray(w1, float) + lambda_star
    )


def disentangled_bound_check(
    theta, var_s=DEFAULT_VAR_S, var_r_source=DEFAULT_VAR_R, var_r_target=1.0, n: int = 100_000, seed=0
) -> dict[str, np.ndarray]:
    """Theorem 2.4 on the linear SCM, measured: target risk vs the bound, as functions of the leakage.

    Head: the source least-squares head w* (Eq. 22) on the semantic stream z_s = cos s + sin r.
    Loss: the absolute error |y - w z_s|, which is 1-Lipschitz, so K = |w*| (Lipschitz constant of
    loss o head) and lambda* = 0 suffice here: with the monotone coupling of r and r',
    |e_T| - |e_S| <= |w*| |sin theta| |r' - r| pointwise, whose mean is K L_leak W1 (Eq. 31).

    The Monte-Carlo risks use common standard-normal draws for both domains (the optimal coupling),
    so the bound with the *empirical* W1 of those draws holds sample by sample.

    Returns:
        dict of arrays (broadcast over the inputs): ``leakage``, ``w_star``, ``K``, ``w1`` (closed form),
        ``w1_empirical``, ``source_risk``, ``target_risk`` (MC), ``source_risk_exact``,
        ``target_risk_exact`` (closed form: E|N(0, v)| = sqrt(2 v / pi)), ``bound`` (closed-form W1 and
        exact source risk) and ``bound_empirical`` (MC source risk and empirical W1).
    """
    if int(n) != n or n < 1:
        raise ValueError(f"n must be a positive int, got {n!r}")
    theta = np.asarray(theta, float)
    var_s, vr, vt = (np.asarray(v, float) for v in (var_s, var_r_source, var_r_target))
    _positive(var_s=var_s, var_r_source=vr, var_r_target=vt)
    gen = _rng(seed)
    e_s, e_r = gen.standard_normal(n), gen.standard_normal(n)
    w = least_squares_head(theta, var_s, vr)
    leak = leakage_coefficient_linear(theta)
    c, sn = np.cos(theta), np.sin(theta)
    a, b = 1.0 - w * c, w * sn  # error e = a s - b r
    shape = np.broadcast_shapes(theta.shape, var_s.shape, vr.shape, vt.shape)
    sd_s = np.sqrt(var_s)[..., None]

    def mc_abs_risk(var_r):
        err = a[..., None] * sd_s * e_s - b[..., None] * np.sqrt(var_r)[..., None] * e_r
        return np.broadcast_to(np.abs(err).mean(axis=-1), shape)

    def exact_abs_risk(var_r):
        return np.sqrt(2.0 / np.pi) * np.sqrt(a**2 * var_s + b**2 * var_r)

    w1 = gaussian_w1(np.sqrt(vr), np.sqrt(vt))
    w1_emp = np.abs(np.sqrt(vt) - np.sqrt(vr)) * np.abs(e_r).mean()  # the coupled draws' mean |r' - r|
    src, tgt = mc_abs_risk(vr), mc_abs_risk(vt)
    src_exact, tgt_exact = exact_abs_risk(vr), exact_abs_risk(vt)
    k = np.abs(w)
    return {
        "leakage": np.broadcast_to(leak, shape),
        "w_star": np.broadcast_to(w, shape),
        "K": np.broadcast_to(k, shape),
        "w1": np.broadcast_to(w1, shape),
        "w1_empirical": np.broadcast_to(w1_emp, shape),
        "source_risk": src,
        "target_risk": tgt,
        "source_risk_exact": np.broadcast_to(src_exact, shape),
        "target_risk_exact": np.broadcast_to(tgt_exact, shape),
        "bound": np.broadcast_to(disentangled_bound(src_exact, leak, w1, K=k), shape),  # Eq. 9
        "bound_empirical": np.broadcast_to(disentangled_bound(src, leak, w1_emp, K=k), shape),
    }


# ------------------------------------------------------------------------ Lemma B.1 (Appendix B)
def linear_cka_numpy(x: np.ndarray, y: np.ndarray, eps: float = 1e-10) -> float:
    """Linear CKA (Eq. 11 / Eq. 28) in NumPy, for the theory module (the differentiable torch version
    is :func:`coremtl_lite.losses.cka.linear_cka`; same conventions: 0 when a side has no variance)."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    if x.ndim != 2 or y.ndim != 2 or x.shape[0] != y.shape[0]:
        raise ValueError(f"linear_cka_numpy expects (n, d1) and (n, d2), got {x.shape} and {y.shape}")
    xc, yc = x - x.mean(0), y - y.mean(0)
    ssx, ssy = (xc**2).sum(), (yc**2).sum()
    if ssx <= eps * (x**2).sum() or ssy <= eps * (y**2).sum() or ssx == 0 or ssy == 0:
        return 0.0
    xc, yc = xc / np.sqrt(ssx), yc / np.sqrt(ssy)
    return float(np.linalg.norm(yc.T @ xc) ** 2 / (np.linalg.norm(xc.T @ xc) * np.linalg.norm(yc.T @ yc)))


def cka_closed_form(theta, var_s=DEFAULT_VAR_S, var_r=DEFAULT_VAR_R, dim_s: int = 1, dim_r: int = 1):
    """Population linear CKA between the semantic and residual streams of R(theta)[s; r]; broadcasts.

    Derivation (Lemma B.1): for a paired coordinate, Var(z_s_i) = a = cos^2 var_s + sin^2 var_r,
    Var(z_p_i) = b = sin^2 var_s + cos^2 var_r, Cov(z_s_i, z_p_i) = k = cos sin (var_r - var_s), and all
    other covariances vanish. With m = min(dim_s, dim_r) pairs and the unpaired coordinates keeping
    their variances, Eq. 28 in the population gives::

        CKA = m k^2 / ( sqrt(m a^2 + (dim_s - m) var_s^2) * sqrt(m b^2 + (dim_r - m) var_r^2) ),

    which for dim_s = dim_r is the squared correlation k^2 / (a b) of one pair -- the "squared
    cross-correlation" of Lemma B.1. Two blind spots of CKA as an entanglement proxy: it is 0 for every
    theta when var_s = var_r (a rotated isotropic Gaussian is isotropic), and it is symmetric about
    pi/4, back to 0 at theta = pi/2 where the streams are independent but *swapped*.
    """
    theta = np.asarray(theta, float)
    var_s, var_r = np.asarray(var_s, float), np.asarray(var_r, float)
    m = min(dim_s, dim_r)
    c2, s2 = np.cos(theta) ** 2, np.sin(theta) ** 2
    a = c2 * var_s + s2 * var_r
    b = s2 * var_s + c2 * var_r
    k = np.cos(theta) * np.sin(theta) * (var_r - var_s)
    num = m * k**2  # ||Cov(z_p, z_s)||_F^2
    den = np.sqrt(m * a**2 + (dim_s - m) * var_s**2) * np.sqrt(m * b**2 + (dim_r - m) * var_r**2)
    return num / den  # Eq. 28 with population covariances


def cka_vs_theta(
    theta, var_s=DEFAULT_VAR_S, var_r=DEFAULT_VAR_R, n: int = 20_000, seed=0, dim_s: int = 1, dim_r: int = 1
) -> np.ndarray:
    """Monte-Carlo linear CKA (Eq. 28) between z_s and z_p of the SCM for each angle in ``theta``.

    One set of latent draws is shared across angles (common random numbers), so the curve is smooth.
    Finite-sample CKA is biased upwards by about dim_s * dim_r / n. Returns an array shaped like theta.
    """
    theta = np.asarray(theta, float)
    gen = _rng(seed)
    base = LinearGaussianSCM(dim_s, dim_r, var_s, var_r, 0.0)
    draws = base.sample(n, gen)
    latent = np.concatenate([draws.s, draws.r], axis=1)
    out = np.empty(theta.shape)
    for idx, th in np.ndenumerate(theta):
        scm = LinearGaussianSCM(dim_s, dim_r, var_s, var_r, float(th))
        z = latent @ scm.rotation().T
        out[idx] = linear_cka_numpy(scm.semantic_stream(z), scm.residual_stream(z))
    return out


# ---------------------------------------------------------------- Proposition 2.5 (Appendix D)
def gradient_cosine_vs_independence(
    phi, dim: int = 4, num_task_outputs: int = 3, n: int = 4000, seed=0
) -> dict[str, np.ndarray]:
    """Measure E[cos^2(g_task, g_res)] against the streams' CKA as they go from independent to entangled.

    Set-up of Appendix D with linear maps. A whitened shared backbone feature F = [s; r] ~ N(0, I_2d)
    (the LayerNorm / whitening assumption behind Eq. 38) feeds two streams with Jacobians
    J_s = [I, 0] (z_s = s) and J_p(phi) = [sin(phi) I, cos(phi) I] (z_p = sin(phi) s + cos(phi) r):
    phi is the *stream overlap angle*, phi = 0 gives independent streams. Task loss
    L_task = 1/2 ||W z_s - B s||^2 (a head W on the semantic stream, tasks B s); residual loss
    L_res = 1/2 ||V z_p - r||^2 (a residual-side head reconstructing r). W, V, B are fixed random
    (seeded) matrices: heads early in training, so both error signals are non-zero.

    Per sample, the gradients w.r.t. the shared feature F are g_task = J_s^T delta_s and
    g_res = J_p^T delta_p (Eq. 33). (W.r.t. the concatenation [z_s, z_p] they would be orthogonal for
    any phi, trivially; the interaction happens in the shared backbone.) Here J_s J_p^T = sin(phi) I
    = Cov(z_s, z_p) (Eq. 38), the population CKA is sin^2(phi), and
    cos^2(g_task, g_res) = sin^2(phi) cos^2(delta_s, delta_p) <= CKA: Eq. 10 with C1 = 1, C2 = 0.

    Returns:
        dict of arrays over ``phi``: ``phi``, ``cka`` (MC, Eq. 28 on the samples), ``cka_closed``
        (sin^2 phi), ``cos2`` (mean over samples of the squared cosine, Eq. 34), ``cos2_delta`` (mean
        squared cosine of the head error signals, the constant that multiplies CKA here).
    """
    phi = np.atleast_1d(np.asarray(phi, float))
    if phi.ndim != 1:
        raise ValueError(f"phi must be a scalar or 1-d array, got shape {phi.shape}")
    gen = _rng(seed)
    s = gen.standard_normal((n, dim))
    r = gen.standard_normal((n, dim))
    w_head = gen.standard_normal((num_task_outputs, dim)) / np.sqrt(dim)
    b_task = gen.standard_normal((num_task_outputs, dim)) / np.sqrt(dim)
    v_head = gen.standard_normal((dim, dim)) / np.sqrt(dim)
    j_s = np.concatenate([np.eye(dim), np.zeros((dim, dim))], axis=1)
    delta_s = (s @ w_head.T - s @ b_task.T) @ w_head  # dL_task/dz_s (rows: samples)
    g_task = delta_s @ j_s  # Eq. 33: g_task = J_s^T delta_s
    out = {k: np.empty(phi.shape) for k in ("cka", "cos2", "cos2_delta")}
    for i, p in enumerate(phi):
        j_p = np.concatenate([np.sin(p) * np.eye(dim), np.cos(p) * np.eye(dim)], axis=1)
        z_p = np.concatenate([s, r], axis=1) @ j_p.T
        delta_p = (z_p @ v_head.T - r) @ v_head  # dL_res/dz_p
        g_res = delta_p @ j_p  # Eq. 33: g_res = J_p^T delta_p
        cos = (g_task * g_res).sum(1) / (np.linalg.norm(g_task, axis=1) * np.linalg.norm(g_res, axis=1))
        cos_d = (delta_s * delta_p).sum(1) / (
            np.linalg.norm(delta_s, axis=1) * np.linalg.norm(delta_p, axis=1)
        )
        out["cos2"][i] = np.mean(cos**2)  # E[cos^2(g_task, g_res)], left side of Eq. 10
        out["cos2_delta"][i] = np.mean(cos_d**2)
        out["cka"][i] = linear_cka_numpy(s, z_p)  # Indep(z_s, z_p), z_s = s
    return {"phi": phi, "cka_closed": np.sin(phi) ** 2, **out}


# ------------------------------------------------ Theorem 2.3 in action: two tasks, EW vs PCGrad
def pcgrad_combine(grads: list[np.ndarray], rng: np.random.Generator) -> np.ndarray:
    """PCGrad (Yu et al., 2020), a member of the class 𝒜 of Def. 2.1 (paper Eq. 4), on flat gradients.

    For each task gradient g_i, in a random order over the other tasks j: if g_i . g_j < 0, remove the
    conflicting component, g_i <- g_i - (g_i . g_j / ||g_j||^2) g_j (projecting against the *original*
    g_j). The update is the sum of the projected gradients.
    """
    projected = []
    for i, g in enumerate(grads):
        g = g.copy()
        for j in rng.permutation(len(grads)):
            if j == i:
                continue
            dot = g @ grads[j]
            norm2 = grads[j] @ grads[j]
            if dot < 0 and norm2 > 0:
                g -= dot / norm2 * grads[j]
        projected.append(g)
    return np.sum(projected, axis=0)  # Eq. 4: d = sum_t alpha_t(g) g_t


def train_two_linear_tasks(
    method: str = "ew",
    theta: float = np.pi / 4,
    var_s: float = DEFAULT_VAR_S,
    var_r: float = DEFAULT_VAR_R,
    var_r_target: float = 1.0,
    n: int = 2000,
    steps: int = 1500,
    lr: float = 0.1,
    task: np.ndarray | None = None,
    seed=0,
) -> dict:
    """Train two linear tasks on the entangled semantic stream with EW or PCGrad; report OOD risks.

    The SCM has dim_s = dim_r = 2; the shared layer U (2x2) maps the semantic stream z_s to
    u = U z_s and task heads w_t read u: yhat_t = w_t^T U z_s, targets y_t = a_t^T s with two
    conflicting rows a_t (default [[1, 1], [1, -1]]). Full-batch gradient descent on n source samples;
    the gradient of the shared U is the equal-weight sum of task gradients (``"ew"``) or their PCGrad
    combination (``"pcgrad"``); heads get their own task gradient. Both are in 𝒜 (Def. 2.1): they change
    how task gradients are weighted, never the representation z_s = cos s + sin r, so each task keeps
    the OOD floor of Theorem 2.3, while theta = 0 (a disentangled encoder) has none.

    Returns:
        dict with ``method``, ``theta``, ``train_loss`` (per step, summed over tasks),
        ``source_risk``, ``target_risk``, ``gap`` (population risks of the trained predictor, per task),
        ``floor`` (the gap of the source-optimal predictor, per task: ||a_t||^2 w*^2 sin^2 (var_r' - var_r)),
        ``conflicts`` (fraction of steps whose shared-layer task gradients had a negative dot product).
    """
    method = method.lower()
    if method not in ("ew", "pcgrad"):
        raise ValueError(f"method must be 'ew' or 'pcgrad', got {method!r}")
    task = np.array([[1.0, 1.0], [1.0, -1.0]]) if task is None else np.asarray(task, float)
    if task.shape != (2, 2):
        raise ValueError(f"task must be a (2, 2) matrix (two tasks of a 2-d s), got {task.shape}")
    gen = _rng(seed)
    scm = LinearGaussianSCM(2, 2, var_s, var_r, float(theta), task=task)
    data = scm.sample(n, gen)
    zs = scm.semantic_stream(data.z)
    shared = np.eye(2) + 0.1 * gen.standard_normal((2, 2))
    heads = 0.1 * gen.standard_normal((2, 2))  # row t: w_t
    losses, conflicts = [], 0
    for _ in range(steps):
        u = zs @ shared.T
        err = u @ heads.T - data.y  # (n, T)
        losses.append(float(0.5 * (err**2).mean(axis=0).sum()))
        head_grads = err.T @ u / n  # dL_t/dw_t, row t
        # dL_t/dU = w_t (mean err_t z_s)^T, flattened per task
        shared_grads = [np.outer(heads[t], err[:, t] @ zs / n).ravel() for t in range(2)]
        conflicts += int(shared_grads[0] @ shared_grads[1] < 0)
        if method == "ew":
            d_shared = np.sum(shared_grads, axis=0)  # Eq. 4 with alpha_t = 1
        else:
            d_shared = pcgrad_combine(shared_grads, gen)
        heads -= lr * head_grads
        shared -= lr * d_shared.reshape(2, 2)
    predictor = heads @ shared  # yhat = (w_t^T U) z_s
    source = scm.risk(predictor)
    target = scm.risk(predictor, var_r_target)
    floor = scm.ood_gap(var_r_target)
    return {
        "method": method,
        "theta": float(theta),
        "train_loss": np.array(losses),
        "source_risk": source,
        "target_risk": target,
        "gap": target - source,
        "floor": floor,
        "conflicts": conflicts / steps,
    }


# ------------------------------------------------------------------------ the tutorial's widget
def gap_figure_data(
    theta: float, shift: float, var_s: float = DEFAULT_VAR_S, var_r: float = DEFAULT_VAR_R, num: int = 181
) -> dict:
    """What the tutorial's theta / shift widget draws: the gap curve and the current point.

    ``shift`` is the ratio of target to source residual variance, var_r' = shift * var_r (shift = 1:
    no domain shift). Returns a dict with ``theta_grid`` (0..pi/2), ``gap_curve`` (Eq. 27 along it),
    the current point ``theta``, ``gap``, the source-optimal head ``w_star`` (Eq. 22), the
    ``leakage`` |sin theta| (Eq. 8), ``var_r_target`` and a ``title`` string.
    """
    if not np.isfinite(theta):
        raise ValueError(f"theta must be finite, got {theta!r}")
    _positive(shift=shift, var_s=var_s, var_r=var_r)
    var_r_target = shift * var_r
    grid = np.linspace(0.0, np.pi / 2, num)
    gap = float(ood_gap(theta, var_s, var_r, var_r_target))
    w_star = float(least_squares_head(theta, var_s, var_r))
    leak = float(leakage_coefficient_linear(theta))
    return {
        "theta_grid": grid,
        "gap_curve": ood_gap(grid, var_s, var_r, var_r_target),
        "theta": float(theta),
        "gap": gap,
        "w_star": w_star,
        "leakage": leak,
        "var_r_target": var_r_target,
        "title": (
            f"theta = {np.degrees(theta):.1f} deg, var_r' = {shift:g} x var_r: "
            f"w* = {w_star:.3f}, gap = {gap:.4f}"
        ),
    }
