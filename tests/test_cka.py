"""Tests of linear CKA (paper Eq. 11), the independence loss of CORE-MTL."""

import numpy as np
import pytest
import torch

from coremtl_lite.losses.cka import gram_cka, linear_cka

DTYPES = [torch.float32, torch.float64]
TOL = {torch.float32: 1e-5, torch.float64: 1e-10}


def _gen(seed):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(64, 5, 3), (10, 1, 7), (33, 12, 12), (3, 4, 2)])
def test_equals_gram_hsic_form(dtype, shape):
    n, d1, d2 = shape
    g = _gen(n + d1 + d2)
    x = torch.randn(n, d1, generator=g, dtype=dtype) * 3 + 1
    # y partly depends on x so the value is not near 0
    y = x[:, :1] * torch.randn(1, d2, generator=g, dtype=dtype) + torch.randn(n, d2, generator=g, dtype=dtype)
    a, b = linear_cka(x, y), gram_cka(x, y)
    assert a.dtype == dtype
    assert 0.0 < a.item() <= 1.0
    assert abs(a.item() - b.item()) < TOL[dtype]


def test_matches_direct_numpy_formula():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(50, 4)), rng.normal(size=(50, 6))
    x[:, 0] += y[:, 1]
    xc, yc = x - x.mean(0), y - y.mean(0)
    expected = np.linalg.norm(yc.T @ xc) ** 2 / (np.linalg.norm(xc.T @ xc) * np.linalg.norm(yc.T @ yc))
    got = linear_cka(torch.from_numpy(x), torch.from_numpy(y)).item()
    assert got == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("dtype", DTYPES)
def test_invariances_give_one(dtype):
    g = _gen(1)
    x = torch.randn(200, 6, generator=g, dtype=dtype)
    q, _ = torch.linalg.qr(torch.randn(6, 6, generator=g, dtype=torch.float64))
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    assert linear_cka(x, x @ q.to(dtype)).item() == pytest.approx(1.0, abs=tol)  # orthogonal transform
    assert linear_cka(x, 3.0 * x).item() == pytest.approx(1.0, abs=tol)  # isotropic scaling
    assert linear_cka(x, x + 5.0).item() == pytest.approx(1.0, abs=tol)  # translation (centring)
    # a non-isotropic scaling is not an invariance: CKA must drop below 1
    assert linear_cka(x, x * torch.tensor([10.0, 1, 1, 1, 1, 1], dtype=dtype)).item() < 0.9


def test_symmetric():
    g = _gen(2)
    x, y = torch.randn(40, 3, generator=g), torch.randn(40, 5, generator=g)
    assert linear_cka(x, y).item() == pytest.approx(linear_cka(y, x).item(), rel=1e-6)


@pytest.mark.parametrize("dtype", DTYPES)
def test_independent_large_samples_near_zero(dtype):
    g = _gen(3)
    x = torch.randn(5000, 3, generator=g, dtype=dtype)
    y = torch.randn(5000, 2, generator=g, dtype=dtype)
    value = linear_cka(x, y).item()
    assert 0.0 <= value < 0.05
    # and a dependent pair of the same size is clearly not near 0
    assert linear_cka(x, torch.cat([x[:, :1], y], 1)).item() > 0.2


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", ["n1", "n2", "const_x", "const_both", "zeros", "one_const_column"])
def test_degenerate_batches_finite_value_and_grad(dtype, case):
    g = _gen(4)
    n = {"n1": 1, "n2": 2}.get(case, 8)
    x = torch.randn(n, 4, generator=g, dtype=dtype)
    y = torch.randn(n, 3, generator=g, dtype=dtype)
    if case in ("const_x", "const_both"):
        x = torch.full((n, 4), 0.7, dtype=dtype) + torch.arange(4, dtype=dtype)  # each column constant
    if case == "const_both":
        y = torch.full((n, 3), -2.3, dtype=dtype)
    if case == "zeros":
        x = torch.zeros(n, 4, dtype=dtype)
    if case == "one_const_column":
        x[:, 2] = 1.234
    x.requires_grad_(True)
    y.requires_grad_(True)
    value = linear_cka(x, y)
    value.backward()
    assert torch.isfinite(value)
    assert torch.isfinite(x.grad).all() and torch.isfinite(y.grad).all()
    if case in ("n1", "const_x", "const_both", "zeros"):
        assert value.item() == 0.0  # the defined value when a side has no variance
        assert torch.count_nonzero(x.grad) == 0
    if case == "n2":
        assert value.item() == pytest.approx(1.0, abs=1e-5)  # two points: both sides are rank 1, aligned
    if case == "one_const_column":
        assert 0.0 < value.item() <= 1.0
        assert gram_cka(x.detach(), y.detach()).item() == pytest.approx(value.item(), abs=1e-5)


def test_gradient_matches_finite_differences():
    g = _gen(5)
    x = torch.randn(12, 3, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.randn(12, 2, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: linear_cka(a, b), (x, y))


def test_gradient_descent_decorrelates():
    """Minimising CKA (as L_ind does) drives a dependent pair towards independence."""
    g = _gen(6)
    base = torch.randn(256, 3, generator=g)
    y = base @ torch.randn(3, 2, generator=g) + 0.1 * torch.randn(256, 2, generator=g)
    x = base.clone().requires_grad_(True)
    start = linear_cka(x, y).item()
    opt = torch.optim.SGD([x], lr=50.0)
    for _ in range(100):
        opt.zero_grad()
        linear_cka(x, y).backward()
        opt.step()
    assert start > 0.3
    assert linear_cka(x, y).item() < 0.1 * start


def test_bad_shapes_raise_named_errors():
    with pytest.raises(ValueError, match=r"\(4, 3, 2, 2\)"):
        linear_cka(torch.zeros(4, 3, 2, 2), torch.zeros(4, 2))
    with pytest.raises(ValueError, match="same batch size"):
        linear_cka(torch.zeros(4, 3), torch.zeros(5, 3))
    with pytest.raises(ValueError, match="empty"):
        linear_cka(torch.zeros(0, 3), torch.zeros(0, 3))
    with pytest.raises(TypeError):
        linear_cka(np.zeros((4, 3)), torch.zeros(4, 3))
