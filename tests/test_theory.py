"""Tests of coremtl_lite.theory: the linear-Gaussian SCM of paper §2 and its closed forms."""

import numpy as np
import pytest
import torch
from scipy.stats import wasserstein_distance

from coremtl_lite import theory as T
from coremtl_lite.losses.cka import linear_cka

THETAS = np.linspace(np.pi / 12, 5 * np.pi / 12, 5)  # a grid inside (0, pi/2)
DEFAULT_VR = T.DEFAULT_VAR_R


# ------------------------------------------------------------------------------------ the SCM
def test_rotation_is_a_rotation_and_pairs_coordinates():
    scm = T.LinearGaussianSCM(dim_s=3, dim_r=2, theta=0.3)
    rot = scm.rotation()
    assert rot.shape == (5, 5)
    np.testing.assert_allclose(rot @ rot.T, np.eye(5), atol=1e-12)
    assert np.linalg.det(rot) == pytest.approx(1.0)
    assert rot[0, 3] == pytest.approx(np.sin(0.3)) and rot[0, 0] == pytest.approx(np.cos(0.3))
    assert rot[2, 2] == 1.0 and np.count_nonzero(rot[2]) == 1  # unpaired semantic coordinate untouched
    np.testing.assert_allclose(T.LinearGaussianSCM(2, 2, theta=0.0).rotation(), np.eye(4))


def test_sample_shapes_seeding_and_moments():
    scm = T.LinearGaussianSCM(2, 3, var_s=2.0, var_r=0.5, theta=0.4, task=[[1.0, -1.0]])
    a = scm.sample(200_000, np.random.default_rng(1))
    b = scm.sample(200_000, 1)
    assert a.s.shape == (200_000, 2) and a.r.shape == (200_000, 3) and a.z.shape == (200_000, 5)
    assert a.y.shape == (200_000, 1)
    np.testing.assert_array_equal(a.z, b.z)  # same seed, same draw
    np.testing.assert_allclose(a.y[:, 0], a.s[:, 0] - a.s[:, 1])
    assert a.s.var(0) == pytest.approx([2.0, 2.0], rel=0.02)
    assert a.r.var(0) == pytest.approx([0.5] * 3, rel=0.02)
    target = scm.sample(200_000, 2, var_r=4.0)
    assert target.r.var(0) == pytest.approx([4.0] * 3, rel=0.02)
    zs = scm.semantic_stream(a.z)
    np.testing.assert_allclose(zs[:, 0], np.cos(0.4) * a.s[:, 0] + np.sin(0.4) * a.r[:, 0])  # Eq. 18
    with pytest.raises(ValueError, match="task"):
        T.LinearGaussianSCM(2, 2, task=[[1.0, 2.0, 3.0]])
    with pytest.raises(ValueError, match="var_r"):
        T.LinearGaussianSCM(1, 1, var_r=0.0)
    with pytest.raises(ValueError, match="seed"):
        scm.sample(10, None)


def test_vector_scm_matches_scalar_closed_forms():
    theta, vs, vr, vt = 0.7, 1.5, 0.3, 2.0
    scm = T.LinearGaussianSCM(3, 3, vs, vr, theta)
    head = scm.optimal_head()
    np.testing.assert_allclose(head, T.least_squares_head(theta, vs, vr) * np.eye(3), atol=1e-12)
    np.testing.assert_allclose(scm.ood_gap(vt), T.ood_gap(theta, vs, vr, vt), rtol=1e-12)  # per coordinate
    # a linear task y = A s scales the per-coordinate gap by ||a_t||^2
    scm_a = T.LinearGaussianSCM(2, 2, vs, vr, theta, task=[[1.0, 2.0], [0.5, 0.0]])
    np.testing.assert_allclose(scm_a.ood_gap(vt), np.array([5.0, 0.25]) * T.ood_gap(theta, vs, vr, vt))
    # the population risk agrees with a sample estimate
    data = scm_a.sample(400_000, 3)
    pred = scm_a.semantic_stream(data.z) @ scm_a.optimal_head().T
    np.testing.assert_allclose(((data.y - pred) ** 2).mean(0), scm_a.risk(scm_a.optimal_head()), rtol=0.02)
    assert scm.leakage() == pytest.approx(np.sin(theta))


def test_least_squares_head_matches_a_fit():
    theta, vs, vr = np.pi / 4, 1.0, DEFAULT_VR
    scm = T.LinearGaussianSCM(1, 1, vs, vr, theta)
    data = scm.sample(500_000, 0)
    w_fit = np.linalg.lstsq(scm.semantic_stream(data.z), data.y, rcond=None)[0].item()
    assert w_fit == pytest.approx(T.least_squares_head(theta, vs, vr), rel=0.01)
    assert T.least_squares_head(np.pi / 4, 1.0, 1.0) == pytest.approx(np.sqrt(0.5))


# ---------------------------------------------------------------------------- Theorem 2.3
def test_closed_form_gap_equals_monte_carlo_within_2_percent():
    """Acceptance criterion: MC (n = 10^6, seeded) vs Eq. 27 over 5 angles x 3 shifts x 2 variances."""
    theta = THETAS[:, None, None]
    var_r = np.array([0.25, 1.0])[None, :, None]
    factor = np.array([1.5, 2.0, 4.0])[None, None, :]
    for seed in (0, 1):
        mc = T.ood_gap_monte_carlo(theta, 1.0, var_r, factor * var_r, n=1_000_000, seed=seed)
        closed = T.ood_gap(theta, 1.0, var_r, factor * var_r)
        assert mc.shape == closed.shape == (5, 2, 3)
        assert np.all(closed > 0)
        np.testing.assert_allclose(mc, closed, rtol=0.02)
    # the MC is seeded: same seed, same number
    assert T.ood_gap_monte_carlo(0.5, 1.0, 0.25, 1.0, n=10_000, seed=7) == T.ood_gap_monte_carlo(
        0.5, 1.0, 0.25, 1.0, n=10_000, seed=7
    )


def test_monte_carlo_sufficient_statistics_equal_an_explicit_fit():
    """monte_carlo_risks combines sample sums in closed form; redo it with explicit arrays."""
    theta, vs, vr, vt, n, seed = 0.9, 1.3, 0.4, 1.7, 1000, 11
    got = T.monte_carlo_risks(theta, vs, vr, vt, n, seed)
    gen = np.random.default_rng(seed)
    e_s, e_r, t_s, t_r = (gen.standard_normal(n) for _ in range(4))
    z = np.cos(theta) * np.sqrt(vs) * e_s + np.sin(theta) * np.sqrt(vr) * e_r
    w = np.linalg.lstsq(z[:, None], np.sqrt(vs) * e_s, rcond=None)[0].item()
    y_test = np.sqrt(vs) * t_s

    def risk(v):
        z_test = np.cos(theta) * np.sqrt(vs) * t_s + np.sin(theta) * np.sqrt(v) * t_r
        return np.mean((y_test - w * z_test) ** 2)

    assert got["w_hat"] == pytest.approx(w, rel=1e-12)
    assert got["source_risk"] == pytest.approx(risk(vr), rel=1e-10)
    assert got["target_risk"] == pytest.approx(risk(vt), rel=1e-10)


def test_gap_zero_when_disentangled_and_positive_when_entangled():
    assert T.ood_gap(0.0, 1.0, 0.25, 4.0) == 0.0
    assert T.ood_gap_monte_carlo(0.0, 1.0, 0.25, 4.0, n=10_000, seed=0) == pytest.approx(0.0, abs=1e-12)
    assert np.all(T.ood_gap(THETAS, 1.0, 0.25, 0.5) > 0)  # sin != 0 and var_r' > var_r
    assert np.all(T.ood_gap(THETAS, 1.0, 0.25, 0.1) < 0)  # a smaller target variance helps
    assert np.all(T.ood_gap(THETAS, 1.0, 0.25, 0.25) == 0)  # no shift, no gap
    # Eq. 26 = Eq. 27
    w = T.least_squares_head(THETAS, 1.0, 0.25)
    np.testing.assert_allclose(T.ood_gap(THETAS, 1.0, 0.25, 0.9), w**2 * np.sin(THETAS) ** 2 * 0.65)
    # the paper's form Delta >= c sin^2(theta) (shift): gap / sin^2 is bounded below on the grid
    assert np.all(T.ood_gap(THETAS, 1.0, 0.25, 1.0) / np.sin(THETAS) ** 2 > 0.05)


def test_gap_broadcasts():
    gap = T.ood_gap(THETAS[:, None], np.array([1.0, 2.0]), 0.25, 1.0)
    assert gap.shape == (5, 2)
    assert gap[2, 1] == pytest.approx(T.ood_gap(THETAS[2], 2.0, 0.25, 1.0))
    assert T.least_squares_head(THETAS[None], 1.0, np.array([[0.1], [1.0]])).shape == (2, 5)
    assert T.ood_gap_monte_carlo(THETAS, 1.0, 0.25, 1.0, n=1000, seed=0).shape == (5,)


# ---------------------------------------------------------------------------- Theorem 2.4
def test_gaussian_w1_matches_empirical():
    rng = np.random.default_rng(0)
    for sa, sb in [(0.5, 1.0), (1.0, 3.0), (2.0, 2.0)]:
        a = sa * rng.standard_normal(200_000)
        b = sb * rng.standard_normal(200_000)
        empirical = wasserstein_distance(a, b)
        sort_based = np.abs(np.sort(a) - np.sort(b)).mean()
        assert empirical == pytest.approx(sort_based, rel=1e-9)
        assert T.gaussian_w1(sa, sb) == pytest.approx(empirical, abs=0.01)
    np.testing.assert_allclose(T.gaussian_w1(np.array([1.0, 2.0]), 1.0), [0.0, np.sqrt(2 / np.pi)])


def test_leakage_coefficient():
    np.testing.assert_allclose(
        T.leakage_coefficient_linear([0.0, np.pi / 6, np.pi / 2]), [0.0, 0.5, 1.0], atol=1e-15
    )
    # Eq. 8 by brute force: the sup of ||f_s(s, r) - f_s(s, r')|| / ||r - r'|| over random pairs
    scm = T.LinearGaussianSCM(2, 3, theta=0.6)
    rng = np.random.default_rng(0)
    dr = rng.standard_normal((10_000, 3))
    ratio = np.linalg.norm(dr @ scm.rotation()[:2, 2:].T, axis=1) / np.linalg.norm(dr, axis=1)
    assert ratio.max() <= scm.leakage() + 1e-12
    assert ratio.max() == pytest.approx(np.sin(0.6), rel=0.02)
    with pytest.raises(ValueError, match="dim_s"):
        T.leakage_coefficient_from_matrix(np.eye(3), 3)


def test_disentangled_bound_holds_on_monte_carlo_samples():
    theta = np.linspace(0.0, np.pi / 2, 9)
    out = T.disentangled_bound_check(theta[:, None], 1.0, 0.25, np.array([0.5, 1.0, 4.0]), n=50_000, seed=3)
    assert out["bound"].shape == (9, 3)
    assert np.all(out["target_risk"] <= out["bound_empirical"] + 1e-12)  # holds sample by sample
    assert np.all(out["target_risk_exact"] <= out["bound"] + 1e-12)  # and in the population
    np.testing.assert_allclose(out["target_risk"], out["target_risk_exact"], rtol=0.02, atol=1e-12)
    # a disentangled encoder (leakage 0): the bound collapses to the source risk, and there is no gap
    assert out["leakage"][0, 0] == 0.0
    np.testing.assert_allclose(out["bound"][0], out["source_risk_exact"][0])
    np.testing.assert_allclose(out["target_risk"][0], out["source_risk"][0])
    # the bound's shift term is linear in the leakage (Remark 3)
    assert T.disentangled_bound(0.1, 0.5, 0.4, K=2.0, lambda_star=0.05) == pytest.approx(0.1 + 0.4 + 0.05)


# ------------------------------------------------------------------------------- Lemma B.1
def test_cka_closed_form_and_monte_carlo():
    theta = np.linspace(0.0, np.pi / 2, 9)
    closed = T.cka_closed_form(theta, 1.0, 0.25)
    mc = T.cka_vs_theta(theta, 1.0, 0.25, n=40_000, seed=0)
    np.testing.assert_allclose(mc, closed, atol=0.01)
    assert mc[0] < 1e-3  # disentangled: independent streams
    assert np.all(np.diff(closed[:5]) > 0) and np.all(np.diff(mc[:5]) > 0)  # increases on [0, pi/4]
    np.testing.assert_allclose(closed, closed[::-1], atol=1e-12)  # symmetric about pi/4 (the swap)
    # blind spot: equal variances make the rotated streams independent for every theta
    np.testing.assert_allclose(T.cka_closed_form(theta, 1.0, 1.0), 0.0, atol=1e-30)
    # unequal dimensions
    closed_23 = T.cka_closed_form(0.5, 1.0, 0.25, dim_s=2, dim_r=3)
    assert T.cka_vs_theta(0.5, 1.0, 0.25, n=60_000, seed=1, dim_s=2, dim_r=3) == pytest.approx(
        closed_23, abs=0.01
    )


def test_numpy_cka_agrees_with_torch_cka():
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((300, 3)), rng.standard_normal((300, 4))
    y[:, 0] += x[:, 1]
    assert T.linear_cka_numpy(x, y) == pytest.approx(
        linear_cka(torch.from_numpy(x), torch.from_numpy(y)).item(), rel=1e-10
    )
    assert T.linear_cka_numpy(np.ones((5, 2)), y[:5]) == 0.0


# ---------------------------------------------------------------------------- Prop. 2.5
def test_gradient_cosine_grows_with_dependence():
    phi = np.linspace(0.0, np.pi / 2, 7)
    out = T.gradient_cosine_vs_independence(phi, dim=4, n=3000, seed=0)
    assert out["cos2"][0] == pytest.approx(0.0, abs=1e-20)  # independent streams: orthogonal gradients
    assert np.all(np.diff(out["cos2"]) > 0)
    assert np.all(np.diff(out["cka"]) > 0)
    assert np.all(out["cos2"] <= out["cka_closed"] + 1e-12)  # Eq. 10 with C1 = 1, C2 = 0
    np.testing.assert_allclose(out["cos2"], out["cka_closed"] * out["cos2_delta"], rtol=1e-9, atol=1e-15)
    np.testing.assert_allclose(out["cka"], out["cka_closed"], atol=0.01)


# ------------------------------------------------------------------- two tasks, EW vs PCGrad
def test_pcgrad_combine_projects_conflicts():
    rng = np.random.default_rng(0)
    g1, g2 = np.array([1.0, 0.0]), np.array([-1.0, 1.0])
    combined = T.pcgrad_combine([g1, g2], rng)
    # g1 -> g1 - (-1/2) g2 = [0.5, 0.5]; g2 -> g2 - (-1) g1 = [0, 1]
    np.testing.assert_allclose(combined, [0.5, 1.5])
    np.testing.assert_allclose(T.pcgrad_combine([g1, np.array([1.0, 1.0])], rng), [2.0, 1.0])  # no conflict


@pytest.mark.parametrize("method", ["ew", "pcgrad"])
def test_gradient_balancing_keeps_the_ood_floor(method):
    entangled = T.train_two_linear_tasks(method, theta=np.pi / 4, seed=0)
    assert np.all(entangled["gap"] > 0.5)  # the floor stays for both tasks
    np.testing.assert_allclose(entangled["gap"], entangled["floor"], rtol=0.05)  # and equals Theorem 2.3's
    assert entangled["train_loss"][-1] < 0.5 * entangled["train_loss"][0]  # it did train
    disentangled = T.train_two_linear_tasks(method, theta=0.0, seed=0)
    np.testing.assert_allclose(disentangled["gap"], 0.0, atol=1e-12)
    assert np.all(disentangled["source_risk"] < 1e-6)


def test_two_task_methods_reach_the_same_floor():
    ew = T.train_two_linear_tasks("ew", theta=np.pi / 6, seed=1)
    pc = T.train_two_linear_tasks("pcgrad", theta=np.pi / 6, seed=1)
    np.testing.assert_allclose(ew["target_risk"], pc["target_risk"], rtol=0.02)
    with pytest.raises(ValueError, match="method"):
        T.train_two_linear_tasks("mgda")


# ------------------------------------------------------------------------ the widget's logic
def test_gap_figure_data():
    data = T.gap_figure_data(np.pi / 4, 4.0)
    assert data["theta_grid"].shape == data["gap_curve"].shape == (181,)
    assert data["var_r_target"] == pytest.approx(4.0 * T.DEFAULT_VAR_R)
    assert data["gap"] == pytest.approx(
        T.ood_gap(np.pi / 4, T.DEFAULT_VAR_S, T.DEFAULT_VAR_R, T.DEFAULT_VAR_R * 4)
    )
    assert data["gap"] == pytest.approx(0.48)  # 1/4 * 1 * 0.75 / 0.625^2
    assert data["w_star"] == pytest.approx(T.least_squares_head(np.pi / 4, 1.0, 0.25))
    assert data["leakage"] == pytest.approx(np.sqrt(0.5))
    assert "gap = 0.4800" in data["title"]
    assert T.gap_figure_data(0.0, 4.0)["gap"] == 0.0
    np.testing.assert_allclose(T.gap_figure_data(0.3, 1.0)["gap_curve"], 0.0)  # no shift
    with pytest.raises(ValueError, match="shift"):
        T.gap_figure_data(0.3, 0.0)
