"""Every registered method trains a tiny multi-task regression without NaN and lowers its loss."""

from __future__ import annotations

import warnings

import pytest
import torch

from coremtl_lite.methods import available, build_method
from tests._methods_helpers import TinyMTL, make_problem, task_losses

NAMES = ["a", "b", "c"]
# stl trains one task; mtcrl needs the MT-CRL model (modules + routing graph): tests/test_mtcrl.py
ALL = [n for n in available() if n not in ("stl", "mtcrl")] + ["torchjd:UPGrad", "torchjd:PCGrad"]


def train(name: str, steps: int = 40, tasks=NAMES, extra: float = 0.0, **opts):
    """Adam on the tiny model with ``name``; returns (initial, final) mean task loss."""
    x, y = make_problem(len(tasks), seed=1)
    y = y / y.std(0)  # unit-scale targets, so one learning rate suits every method
    model = TinyMTL(len(tasks), seed=2)
    method = build_method(name, tasks, **opts)
    opt = torch.optim.Adam([*model.parameters(), *method.parameters()], lr=1e-2)
    xv, yv = x[::2], y[::2]  # MOML's held-out batch

    def loss_fn(batch, return_outputs=False):
        feats, losses = task_losses(model, batch["x"], batch["y"], tasks)
        return (losses, {"features": feats}) if return_outputs else losses

    def mean_loss():
        with torch.no_grad():
            return float(torch.stack(list(task_losses(model, x, y, tasks)[1].values())).mean())

    first = mean_loss()
    for step in range(steps):
        if method.uses_validation_batch:
            method.meta_step(loss_fn, {"x": x, "y": y}, {"x": xv, "y": yv}, list(model.parameters()))
        opt.zero_grad()
        feats, losses = task_losses(model, x, y, tasks)
        extra_loss = extra * model.trunk[0].weight.pow(2).sum() if extra else None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            logs = method.backward(
                losses, shared_params=model.shared_parameters(), features=feats, extra_loss=extra_loss
            )
        assert all(torch.isfinite(torch.tensor(v)) for v in logs.values()), logs
        for p in model.parameters():
            assert p.grad is not None and torch.isfinite(p.grad).all(), f"{name}: bad grad at step {step}"
        opt.step()
        if step % 10 == 9:
            method.on_epoch_end({t: float(v.detach()) for t, v in losses.items()})
    return first, mean_loss()


@pytest.mark.parametrize("name", ALL)
def test_method_trains(name):
    first, last = train(name)
    assert last < 0.7 * first, f"{name}: loss {first:.3f} -> {last:.3f}"


def test_stl_trains_one_task():
    first, last = train("stl", tasks=["a"])
    assert last < 0.5 * first


@pytest.mark.parametrize("name", ["ew", "pcgrad", "upgrad", "uw"])
def test_extra_loss_gradient_is_added(name):
    """The CORE-MTL extra loss adds exactly its own gradient, for weightings and aggregators alike."""
    x, y = make_problem(3)
    grads = []
    for extra in (False, True):
        model = TinyMTL(3, seed=4)
        feats, losses = task_losses(model, x, y, NAMES)
        extra_loss = 0.3 * model.trunk[0].weight.pow(2).sum() if extra else None
        build_method(name, NAMES).backward(
            losses, shared_params=model.shared_parameters(), features=feats, extra_loss=extra_loss
        )
        grads.append(model.trunk[0].weight.grad.clone())
        w = model.trunk[0].weight.detach()
    torch.testing.assert_close(grads[1] - grads[0], 0.6 * w, rtol=1e-4, atol=1e-5)


def test_aggregator_direction_lands_on_shared_params_and_heads_get_their_gradient():
    x, y = make_problem(3)
    model = TinyMTL(3, seed=5)
    feats, losses = task_losses(model, x, y, NAMES)
    shared = model.shared_parameters()
    jac_rows = [
        torch.cat([g.reshape(-1) for g in torch.autograd.grad(losses[t], shared, retain_graph=True)])
        for t in NAMES
    ]
    head_grad = torch.autograd.grad(losses["b"], model.heads[1].weight, retain_graph=True)[0]
    method = build_method("mgda", NAMES)
    method.backward(losses, shared_params=shared)
    expected = method.aggregate(torch.stack(jac_rows))
    got = torch.cat([p.grad.reshape(-1) for p in shared])
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(model.heads[1].weight.grad, head_grad)
