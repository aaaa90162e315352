"""Property tests of the Jacobian aggregators (PCGrad, MGDA, ...) and the registry."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from coremtl_lite.methods import available, build_method
from coremtl_lite.methods._solvers import fair_weights, gramian, min_norm_simplex
from tests._methods_helpers import random_jacobian

AGGREGATORS = [
    "mgda",
    "mgda_ub",
    "pcgrad",
    "gradvac",
    "cagrad",
    "nash_mtl",
    "imtl_g",
    "aligned_mtl",
    "upgrad",
    "fairgrad",
    "excess_mtl",
]
EXPECTED = {"ew", "stl", "uw", "gradnorm", "dwa", "rlw", "stch", "moml", "repmtl", *AGGREGATORS}
NAMES3 = ["a", "b", "c"]


def test_registry_lists_every_method():
    assert EXPECTED <= set(available())


def test_unknown_names_are_clear_errors():
    with pytest.raises(KeyError, match="did you mean 'pcgrad'"):
        build_method("pcgard", NAMES3)
    with pytest.raises(KeyError, match="torchjd has no aggregator 'NoSuch'.*UPGrad"):
        build_method("torchjd:NoSuch", NAMES3)


def test_aggregate_rejects_wrong_shape():
    with pytest.raises(ValueError, match=r"expected a \(3, P\) Jacobian"):
        build_method("upgrad", NAMES3).aggregate(torch.randn(2, 5))


# ------------------------------------------------------------------------------------------- PCGrad
@pytest.mark.parametrize("seed", range(30))
def test_pcgrad_two_tasks_never_conflicts(seed):
    j = random_jacobian(2, dim=6, seed=seed)
    d = build_method("pcgrad", ["a", "b"], seed=seed).aggregate(j)
    assert (j @ d).min() >= -1e-10  # Yu et al. 2020, Theorem 1 setting (two tasks)


def test_pcgrad_more_tasks_can_conflict():
    """The T = 2 guarantee does not extend to T > 2: after projecting g_i onto the normal plane of
    g_j, a later projection onto g_k's can reintroduce a conflict with g_j. On seeded random
    3 x 5 Jacobians this happens (about 5% of cases); the test documents that it does."""
    violations = 0
    for seed in range(100):
        j = random_jacobian(3, dim=5, seed=seed)
        d = build_method("pcgrad", NAMES3, seed=seed).aggregate(j)
        violations += bool((j @ d).min() < -1e-9)
    assert 0 < violations < 20


def test_pcgrad_without_conflict_is_the_sum():
    j = torch.tensor([[1.0, 0.2, 0.0], [0.5, 1.0, 0.1], [0.1, 0.3, 1.0]], dtype=torch.float64)
    d = build_method("pcgrad", NAMES3).aggregate(j)
    torch.testing.assert_close(d, j.sum(0))


def test_pcgrad_hand_case():
    j = torch.tensor([[1.0, 0.0], [-1.0, 1.0]], dtype=torch.float64)
    # g1^PC = g1 - (-1/2) g2 = (0.5, 0.5); g2^PC = g2 - (-1/1) g1 = (0, 1); sum = (0.5, 1.5)
    d = build_method("pcgrad", ["a", "b"]).aggregate(j)
    torch.testing.assert_close(d, torch.tensor([0.5, 1.5], dtype=torch.float64))


# --------------------------------------------------------------------------------------------- MGDA
@pytest.mark.parametrize("solver", ["quadprog", "frank_wolfe"])
def test_mgda_orthogonal_units_give_midpoint(solver):
    j = torch.eye(2, dtype=torch.float64)
    d = build_method("mgda", ["a", "b"], solver=solver).aggregate(j)
    torch.testing.assert_close(d, torch.tensor([0.5, 0.5], dtype=torch.float64))


@pytest.mark.parametrize("solver", ["quadprog", "frank_wolfe"])
def test_mgda_dominated_case_returns_the_short_gradient(solver):
    # g1 . (g2 - g1) = 1 > 0: the hull's closest point to 0 is g1 itself
    j = torch.tensor([[1.0, 0.0], [2.0, 1.0]], dtype=torch.float64)
    d = build_method("mgda", ["a", "b"], solver=solver).aggregate(j)
    torch.testing.assert_close(d, torch.tensor([1.0, 0.0], dtype=torch.float64))


def test_mgda_opposite_gradients_cancel():
    j = torch.tensor([[1.0, 2.0], [-2.0, -4.0]], dtype=torch.float64)  # 0 is in the hull
    d = build_method("mgda", ["a", "b"]).aggregate(j)
    assert float(d.norm()) < 1e-6


@pytest.mark.parametrize("seed", range(10))
def test_mgda_satisfies_min_norm_optimality(seed):
    """KKT of min_{a in simplex} a^T G a: (G a)_t >= a^T G a for all t, with equality where a_t > 0."""
    j = random_jacobian(5, dim=8, seed=seed)
    g = gramian(j)
    a = min_norm_simplex(g)
    value = a @ g @ a
    assert np.all(g @ a >= value - 1e-8 * np.trace(g))
    assert np.all(np.abs((g @ a - value)[a > 1e-6]) < 1e-7 * np.trace(g))
    d = build_method("mgda", list("abcde")).aggregate(j)
    assert float((j @ d).min()) >= float(d @ d) - 1e-6  # a common descent direction


def test_mgda_ub_takes_the_features():
    with pytest.raises(ValueError, match="on_features=True"):
        build_method("mgda_ub", NAMES3).backward(
            {t: torch.tensor(1.0, requires_grad=True) for t in NAMES3}, shared_params=[]
        )


# -------------------------------------------------------------------------------- shared properties
DETERMINISTIC = ["mgda", "cagrad", "nash_mtl", "imtl_g", "aligned_mtl", "upgrad", "fairgrad", "excess_mtl"]


@pytest.mark.parametrize("name", DETERMINISTIC)
def test_permutation_invariance(name):
    """Permuting the tasks (rows of J) leaves the update unchanged for order-free methods."""
    j = random_jacobian(4, dim=30, seed=3)
    perm = torch.tensor([2, 0, 3, 1])
    d = build_method(name, list("abcd")).aggregate(j)
    d_perm = build_method(name, list("abcd")).aggregate(j[perm])
    tol = 1e-4 if name == "cagrad" else 1e-7  # CAGrad: an iterative SLSQP solve
    torch.testing.assert_close(d_perm, d, rtol=tol, atol=tol)


def test_pcgrad_permutation_invariance_in_expectation():
    """PCGrad visits tasks in random order, so it is permutation-invariant only in distribution:
    for two tasks it is exactly invariant, for three the Monte-Carlo means agree."""
    j2 = random_jacobian(2, dim=10, seed=1)
    torch.testing.assert_close(
        build_method("pcgrad", ["a", "b"]).aggregate(j2.flip(0)),
        build_method("pcgrad", ["a", "b"]).aggregate(j2),
    )
    j = torch.tensor([[1.0, 0.0, 0.0], [-0.8, 1.0, 0.0], [-0.3, -0.9, 1.0]], dtype=torch.float64)
    perm = torch.tensor([2, 0, 1])
    a, b = build_method("pcgrad", NAMES3, seed=0), build_method("pcgrad", NAMES3, seed=1)
    mean = torch.stack([a.aggregate(j) for _ in range(400)]).mean(0)
    mean_perm = torch.stack([b.aggregate(j[perm]) for _ in range(400)]).mean(0)
    assert float((mean - mean_perm).norm() / mean.norm()) < 0.05
    single = torch.stack([a.aggregate(j) for _ in range(50)])
    assert float(single.std(0).max()) > 1e-3  # while single draws do differ


HOMOGENEOUS = ["mgda", "pcgrad", "gradvac", "cagrad", "imtl_g", "aligned_mtl", "upgrad"]


@pytest.mark.parametrize("name", HOMOGENEOUS)
@pytest.mark.parametrize("c", [0.1, 7.0])
def test_positive_scaling_scales_the_update(name, c):
    """These methods are positively homogeneous: A(c J) = c A(J) for c > 0."""
    j = random_jacobian(3, dim=20, seed=5)
    d = build_method(name, NAMES3).aggregate(j)
    dc = build_method(name, NAMES3).aggregate(c * j)
    tol = 1e-4 if name == "cagrad" else 1e-7
    torch.testing.assert_close(dc, c * d, rtol=tol, atol=tol * c)


@pytest.mark.parametrize("alpha", [0.5, 1.0, 2.0])
def test_fairgrad_scaling_exponent(alpha):
    """G w = w^(-1/alpha) implies A(c J) = c^((1 - alpha)/(1 + alpha)) A(J); alpha = 1 (Nash) is scale-free."""
    j = random_jacobian(3, dim=20, seed=6)
    c = 3.0
    d = build_method("fairgrad", NAMES3, alpha=alpha).aggregate(j)
    dc = build_method("fairgrad", NAMES3, alpha=alpha).aggregate(c * j)
    torch.testing.assert_close(dc, c ** ((1 - alpha) / (1 + alpha)) * d, rtol=1e-6, atol=1e-8)


def test_nash_mtl_solves_the_bargaining_equation_and_is_scale_free():
    j = random_jacobian(4, dim=20, seed=7)
    m = build_method("nash_mtl", list("abcd"), max_norm=0.0)
    a = m.weights(j).numpy()
    g = gramian(j)
    np.testing.assert_allclose(g @ a, 1.0 / a, rtol=1e-6)  # Navon et al. 2022, Nash-MTL Eq. 2
    d = m.aggregate(j)
    assert math.isclose(float(d.norm()), 2.0, rel_tol=1e-6)  # ||d||^2 = a^T G a = T
    torch.testing.assert_close(build_method("nash_mtl", list("abcd"), max_norm=0.0).aggregate(10 * j), d)
    clipped = build_method("nash_mtl", list("abcd")).aggregate(j)  # default max_norm = 1
    assert math.isclose(float(clipped.norm()), 1.0, rel_tol=1e-6)


def test_fair_weights_zero_gradients_give_a_zero_step():
    """All-zero J: every weight vector gives d = 0, so the step is zero (not an error)."""
    np.testing.assert_array_equal(fair_weights(np.zeros((2, 2)), alpha=1.0), np.zeros(2))
    d = build_method("fairgrad", ["a", "b"]).aggregate(torch.zeros(2, 5))
    assert torch.equal(d, torch.zeros(5))


@pytest.mark.parametrize("seed", range(5))
def test_upgrad_is_non_conflicting(seed):
    j = random_jacobian(4, dim=6, seed=seed)
    d = build_method("upgrad", list("abcd")).aggregate(j)
    assert float((j @ d).min()) > -1e-3 * float(j.norm() * d.norm())


def test_upgrad_and_aligned_mtl_without_conflict():
    j = torch.eye(3, dtype=torch.float64)
    torch.testing.assert_close(build_method("upgrad", NAMES3).aggregate(j), j.mean(0), rtol=1e-3, atol=1e-3)
    # orthonormal gradients are already "aligned": B = I, d = mean
    torch.testing.assert_close(build_method("aligned_mtl", NAMES3).aggregate(j), j.mean(0))


def test_imtl_g_equal_projections():
    """IMTL-G's update has the same projection on every unit task gradient (Liu et al. 2021, IMTL-G Eq. 7)."""
    j = random_jacobian(3, dim=10, seed=8)
    d = build_method("imtl_g", NAMES3).aggregate(j)
    proj = (j / j.norm(dim=1, keepdim=True)) @ d
    torch.testing.assert_close(proj, proj[0].expand(3))
    torch.testing.assert_close(
        build_method("imtl_g", NAMES3).weights(j).sum(), torch.tensor(1.0, dtype=torch.float64)
    )


def test_cagrad_c_zero_is_the_mean_and_rescale():
    j = random_jacobian(3, dim=10, seed=9)
    torch.testing.assert_close(build_method("cagrad", NAMES3, c=0.0).aggregate(j), j.mean(0))
    d0 = build_method("cagrad", NAMES3, rescale=0).aggregate(j)
    d1 = build_method("cagrad", NAMES3).aggregate(j)
    torch.testing.assert_close(d1, d0 / 1.25)
    # CAGrad Eq. 5: the update stays within the ball of radius c ||g0|| around g0
    g0 = j.mean(0)
    assert float((d0 - g0).norm()) <= 0.5 * float(g0.norm()) * (1 + 1e-6)


def test_excess_mtl_weights_stay_on_the_simplex_and_favour_the_worse_task():
    m = build_method("excess_mtl", ["a", "b"])
    j = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    m.aggregate(j)
    for _ in range(3):  # task b's gradient stays large while a's shrinks: b's excess risk grows
        j = j * torch.tensor([[0.5], [1.0]], dtype=torch.float64)
        w = m.weights(j)
    assert math.isclose(float(w.sum()), 1.0, rel_tol=1e-9)
    assert float(w[1]) > float(w[0])


@pytest.mark.parametrize("name", ["pcgrad", "gradvac", "excess_mtl", "nash_mtl"])
def test_state_dict_gives_exact_resume(name):
    """Save after two steps, restore into a fresh instance: the next updates are identical."""
    a = build_method(name, NAMES3, **({"update_weights_every": 2} if name == "nash_mtl" else {}))
    js = [random_jacobian(3, dim=12, seed=s) for s in range(5)]
    for j in js[:2]:
        a.aggregate(j)
    state = a.state_dict()
    b = build_method(name, NAMES3, **({"update_weights_every": 2} if name == "nash_mtl" else {}))
    b.load_state_dict(state)
    for j in js[2:]:
        torch.testing.assert_close(b.aggregate(j), a.aggregate(j), rtol=0, atol=0)
