"""Every registered method on degenerate task Jacobians: zero, rank-deficient, one row, huge/tiny scale.

The cases follow the kinds of matrices torchjd's own aggregator tests use (zero matrices of several
shapes, rank-deficient "non-strong" matrices, matrices scaled over many orders of magnitude); the
code is ours. A method must return a finite update of the right shape, never raise. The solvers
behind Nash-MTL, FairGrad and IMTL-G are checked against independent solvers and hand-derived limits.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from coremtl_lite.methods import Aggregator, available, build_method
from coremtl_lite.methods._solvers import fair_weights, gramian


def _names(t: int) -> list[str]:
    return [f"t{i}" for i in range(t)]


def degenerate_jacobians() -> list[tuple[str, torch.Tensor]]:
    """Seeded float64 Jacobians (T, P) that are degenerate in one way each."""
    g = torch.Generator().manual_seed(0)

    def randn(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float64)

    cases = []
    for t, p in [(1, 1), (1, 5), (2, 1), (3, 4), (5, 3)]:
        cases.append((f"zero_{t}x{p}", torch.zeros(t, p, dtype=torch.float64)))
    for t in (2, 3, 5):
        cases.append((f"rank1_{t}", randn(t, 1) @ randn(1, 7)))  # mixed signs: opposite directions
        cases.append(
            (f"parallel_{t}", (torch.rand(t, 1, generator=g, dtype=torch.float64) + 0.1) @ randn(1, 7))
        )
        cases.append((f"duplicate_rows_{t}", randn(1, 7).expand(t, 7).clone()))
        one_zero = randn(t, 7)
        one_zero[0] = 0.0
        cases.append((f"one_zero_row_{t}", one_zero))
    cases.append(("rank2_of_4", randn(4, 2) @ randn(2, 9)))
    cases.append(("more_tasks_than_params", randn(5, 2)))
    cases.append(("single_row", randn(1, 6)))
    cases.append(("single_column", randn(3, 1)))
    for scale in (1e-15, 1e-8, 1e8, 1e15):
        cases.append((f"scale_{scale:g}", scale * randn(3, 6)))
    cases.append(
        ("norms_1e-4_to_1e4", randn(3, 6) * torch.tensor([[1e-4], [1.0], [1e4]], dtype=torch.float64))
    )
    return cases


CASES = degenerate_jacobians()
AGGREGATORS = [n for n in available() if issubclass(type(build_method(n, _names(1))), Aggregator)]


def test_every_aggregator_is_covered():
    assert {
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
    } <= set(AGGREGATORS)


@pytest.mark.parametrize("name", AGGREGATORS)
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_aggregators_return_a_finite_update(name, case):
    _, j = case
    d = build_method(name, _names(j.shape[0])).aggregate(j.clone())
    assert d.shape == (j.shape[1],)
    assert bool(torch.isfinite(d).all()), d


@pytest.mark.parametrize("name", AGGREGATORS)
def test_zero_jacobian_gives_a_zero_update(name):
    """With every task gradient zero, every weighting gives d = 0."""
    d = build_method(name, _names(3)).aggregate(torch.zeros(3, 4, dtype=torch.float64))
    assert torch.equal(d, torch.zeros(4, dtype=torch.float64))


# ------------------------------------------------------- every registered method, through backward
class LinearJacobianProblem(nn.Module):
    """Task losses whose Jacobian on the shared weight W is exactly a given J (T, P).

    ``L_t = 1 + (1 + h_t) mean_b <z_b, J_t>`` with features ``z = x W^T`` (B, P), x = ones, W = 0 at
    the start, and one scalar head ``h_t`` per task. At W = 0 every loss equals 1 (so loss-based
    weightings see sensible values whatever the scale of J) and ``dL_t / dW = J_t``.
    """

    def __init__(self, jacobian: torch.Tensor, batch: int = 4):
        super().__init__()
        self.register_buffer("jac", jacobian.float())
        self.weight = nn.Parameter(torch.zeros(jacobian.shape[1], 1))
        self.heads = nn.ParameterList(nn.Parameter(torch.zeros(())) for _ in range(jacobian.shape[0]))
        self.batch = batch

    def forward(self, x: torch.Tensor):
        z = x @ self.weight.T  # (B, P)
        inner = (z @ self.jac.T).mean(0)  # mean_b <z_b, J_t>, per task
        return z, {f"t{i}": 1.0 + (1.0 + h) * inner[i] for i, h in enumerate(self.heads)}


def run_method_once(name: str, jacobian: torch.Tensor) -> LinearJacobianProblem:
    problem = LinearJacobianProblem(jacobian)
    method = build_method(name, _names(jacobian.shape[0]))
    x = torch.ones(problem.batch, 1)

    def loss_fn(batch, return_outputs=False):
        z, losses = problem(batch["x"])
        return (losses, {"features": z}) if return_outputs else losses

    params = list(problem.parameters())
    if method.uses_validation_batch:
        method.meta_step(loss_fn, {"x": x}, {"x": 2 * x}, params)
    z, losses = problem(x)
    method.backward(losses, shared_params=[problem.weight], features=z)
    return problem


NEEDS_MODULES = {"mtcrl"}  # needs the MT-CRL model's routing graph: tested below


@pytest.mark.parametrize("name", [n for n in available() if n not in NEEDS_MODULES])
@pytest.mark.parametrize(
    "case",
    [
        c
        for c in CASES
        if c[0]
        in {
            "zero_3x4",
            "zero_1x5",
            "rank1_3",
            "parallel_3",
            "one_zero_row_3",
            "single_row",
            "single_column",
            "scale_1e-15",
            "scale_1e+15",
            "norms_1e-4_to_1e4",
        }
    ],
    ids=lambda c: c[0],
)
def test_every_method_backward_is_finite(name, case):
    """Each registered method's backward, on losses with a prescribed degenerate Jacobian (STL, a
    single-task method, gets the first row)."""
    _, j = case
    if name == "stl":
        j = j[:1]
    problem = run_method_once(name, j)
    for p in problem.parameters():
        assert p.grad is not None and bool(torch.isfinite(p.grad).all()), (name, p.grad)


@pytest.mark.parametrize("kind", ["zero", "duplicate", "tiny", "huge"])
def test_mtcrl_backward_is_finite_on_degenerate_task_losses(kind):
    """MT-CRL on its own model, with task losses that are zero, duplicated (rank-deficient), tiny or huge."""
    from coremtl_lite.models.mtcrl_model import build_mtcrl_model

    model = build_mtcrl_model((6,), {"a": 1, "b": 1}, num_modules=4, module_dim=4, seed=0)
    method = build_method("mtcrl", ["a", "b"])
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(16, 6, generator=gen), torch.randn(16, generator=gen)
    factor = {"zero": 0.0, "duplicate": 1.0, "tiny": 1e-12, "huge": 1e8}[kind]

    def loss_fn(batch, return_outputs=False):
        out = model(batch["x"])
        la = ((out["preds"]["a"].squeeze(-1) - batch["y"]) ** 2).mean() * factor
        lb = (
            la if kind == "duplicate" else ((out["preds"]["b"].squeeze(-1) + batch["y"]) ** 2).mean() * factor
        )
        losses = {"a": la, "b": lb}
        return (losses, out) if return_outputs else losses

    params = list(model.parameters())
    method.meta_step(loss_fn, {"x": x, "y": y}, {"x": x + 0.1, "y": y}, params)
    losses, out = loss_fn({"x": x, "y": y}, return_outputs=True)
    method.backward(losses, shared_params=model.shared_parameters(), features=out["features"])
    for p in params:
        assert p.grad is None or bool(torch.isfinite(p.grad).all())


# --------------------------------------------------------------------------- Nash-MTL and FairGrad
def _badly_scaled(seed: int, t: int = 4, p: int = 20) -> np.ndarray:
    """A well-posed Jacobian (full row rank) whose task-gradient norms span four orders of magnitude."""
    rng = np.random.default_rng(seed)
    return rng.standard_normal((t, p)) * np.logspace(-2, 2, t)[:, None]


@pytest.mark.parametrize("alpha", [0.5, 1.0, 2.0, 5.0])
@pytest.mark.parametrize("seed", range(4))
def test_fair_weights_solve_the_equation_without_a_ridge(alpha, seed):
    """G w = w^(-1/alpha) to 1e-9 relative, and the same root as scipy's independent solver."""
    from scipy.optimize import least_squares

    g = _badly_scaled(seed) @ _badly_scaled(seed).T
    w = fair_weights(g, alpha)
    target = w ** (-1.0 / alpha)
    assert np.max(np.abs(g @ w - target) / target) < 1e-9
    # scipy on the relative residual, in log-space (w > 0), from a start 30% away
    sol = least_squares(
        lambda z: g @ np.exp(z) * np.exp(z) ** (1.0 / alpha) - 1.0,
        np.log(w) + 0.3,
        xtol=1e-15,
        ftol=1e-15,
        gtol=1e-15,
    )
    np.testing.assert_allclose(np.exp(sol.x), w, rtol=1e-7)


@pytest.mark.parametrize("name, alpha", [("nash_mtl", 1.0), ("fairgrad", 2.0)])
def test_nash_and_fairgrad_update_solves_the_equation(name, alpha):
    j = torch.from_numpy(_badly_scaled(7))
    opts = {"max_norm": 0.0} if name == "nash_mtl" else {"alpha": alpha}
    m = build_method(name, _names(4), **opts)
    w = m.weights(j).numpy()
    benefit = (j @ m.aggregate(j)).numpy()  # <g_t, d>
    np.testing.assert_allclose(benefit, w ** (-1.0 / alpha), rtol=1e-8)


@pytest.mark.parametrize("seed", range(100))
def test_nash_mtl_on_random_rank1_jacobians(seed):
    """Rank-1 three-task Jacobians (gradients on one line, random signs) never crash Nash-MTL."""
    gen = torch.Generator().manual_seed(seed)
    j = torch.randn(3, 1, generator=gen, dtype=torch.float64) @ torch.randn(
        1, 8, generator=gen, dtype=torch.float64
    )
    d = build_method("nash_mtl", _names(3)).aggregate(j)
    assert bool(torch.isfinite(d).all())
    if bool((j[:, 0] > 0).all() or (j[:, 0] < 0).all()):  # all on one side: a common descent direction
        assert float((j @ d).min()) > 0.0
    else:  # opposite gradients: Pareto-stationary, no direction helps every task
        assert float(d.norm()) == 0.0


def test_nash_mtl_parallel_gradients_have_the_bargaining_solution():
    """g_2 = k g_1: G a = 1/a has the solution a = (1, 1/k) / (sqrt 2 ||g_1||), d has norm sqrt 2."""
    g1 = torch.tensor([1.0, 2.0, 2.0], dtype=torch.float64)  # ||g_1|| = 3
    k = 5.0
    j = torch.stack([g1, k * g1])
    a = build_method("nash_mtl", ["a", "b"], max_norm=0.0).weights(j).numpy()
    np.testing.assert_allclose(a, np.array([1.0, 1.0 / k]) / (np.sqrt(2.0) * 3.0), rtol=1e-10)


def test_fairgrad_and_nash_zero_row_is_left_out():
    """A task with an exactly zero gradient gets weight 0; the others are solved among themselves."""
    j = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0]], dtype=torch.float64)
    w = build_method("fairgrad", _names(3), alpha=2.0).weights(j).numpy()
    assert w[0] == 0.0
    np.testing.assert_allclose(w[1:], fair_weights(gramian(j[1:]), 2.0), rtol=1e-12)


# ------------------------------------------------------------------------------------------ IMTL-G
@pytest.mark.parametrize("k", [0.2, 1.0, 3.0])
def test_imtl_g_parallel_gradients_limit(k):
    """g_2 = k g_1: the limit of the full-rank weights is a = (k, 1)/(1 + k), d = 2k/(1 + k) g_1."""
    g1 = torch.tensor([1.0, 2.0, 0.5], dtype=torch.float64)
    j = torch.stack([g1, k * g1])
    m = build_method("imtl_g", ["a", "b"])
    expected = torch.tensor([k, 1.0], dtype=torch.float64) / (1 + k)
    torch.testing.assert_close(m.weights(j), expected)
    torch.testing.assert_close(m.aggregate(j), 2 * k / (1 + k) * g1)
    h = torch.tensor([0.3, -0.1, 0.7], dtype=torch.float64)  # full-rank perturbations tend to it
    for eps in (1e-3, 1e-5):
        w_eps = m.weights(torch.stack([g1, k * g1 + eps * h]))
        assert float((w_eps - expected).abs().max()) < 10 * eps


def test_imtl_g_opposite_gradients_and_zero_rows():
    m = build_method("imtl_g", ["a", "b"])
    j = torch.tensor([[1.0, 0.0], [-2.0, 0.0]], dtype=torch.float64)  # equal projections on u, -u: d = 0
    assert torch.equal(m.aggregate(j), torch.zeros(2, dtype=torch.float64))
    j3 = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    w = build_method("imtl_g", _names(3)).weights(j3)
    torch.testing.assert_close(w, torch.tensor([0.0, 0.5, 0.5], dtype=torch.float64))


def test_imtl_g_rank_deficient_keeps_equal_projections():
    """Rank 2 with three tasks (g_3 = 2 g_1): C b = 1 is solvable, so the projections stay equal."""
    g1 = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)
    g2 = torch.tensor([0.5, 2.0, 0.0], dtype=torch.float64)
    j = torch.stack([g1, g2, 2 * g1])
    m = build_method("imtl_g", _names(3))
    d = m.aggregate(j)
    proj = (j / j.norm(dim=1, keepdim=True)) @ d
    assert float(d.norm()) > 0.1
    torch.testing.assert_close(proj, proj[0].expand(3))
    torch.testing.assert_close(m.weights(j).sum(), torch.tensor(1.0, dtype=torch.float64))


def test_fair_weights_zero_step_exactly_when_no_direction_helps_every_task():
    """Rank-deficient Jacobians: the step is zero iff no d has J d > 0 (Gordan), checked by an LP; otherwise
    the equation is solved to 1e-9."""
    from scipy.optimize import linprog

    rng = np.random.default_rng(1)
    solved = zero = 0
    for _ in range(60):
        t = int(rng.integers(3, 6))
        r = int(rng.integers(1, t))
        j = rng.standard_normal((t, r)) @ rng.standard_normal((r, 12))
        g = j @ j.T
        w = fair_weights(g, 1.0)
        lp = linprog(np.zeros(12), A_ub=-j, b_ub=-np.ones(t), bounds=[(None, None)] * 12, method="highs")
        assert (lp.status == 0) == bool(w.any())  # a common ascent direction exists <=> a non-zero step
        if w.any():
            solved += 1
            assert np.max(np.abs(g @ w - 1.0 / w) * w) < 1e-9
        else:
            zero += 1
    assert solved > 10 and zero > 10  # both cases occur
