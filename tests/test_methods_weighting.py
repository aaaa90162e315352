"""Scalarising, bi-level and representation-level methods: their state, hooks and hand cases."""

from __future__ import annotations

import math

import pytest
import torch

from coremtl_lite.config import get_config
from coremtl_lite.methods import build_method, single_task_configs
from tests._methods_helpers import TinyMTL, make_problem, task_losses

NAMES = ["a", "b", "c"]


def test_rlw_weights_on_simplex_seeded_and_resumable():
    a, b = build_method("rlw", NAMES, seed=3), build_method("rlw", NAMES, seed=3)
    draws = [a.draw() for _ in range(3)]
    for w in draws:
        assert math.isclose(float(w.sum()), 1.0, rel_tol=1e-6) and bool((w > 0).all())
    torch.testing.assert_close(torch.stack(draws), torch.stack([b.draw() for _ in range(3)]))
    state = a.state_dict()
    c = build_method("rlw", NAMES, seed=99)
    c.load_state_dict(state)
    torch.testing.assert_close(c.draw(), a.draw())
    assert not torch.allclose(draws[0], draws[1])


def test_rlw_backward_uses_and_logs_one_draw():
    m = build_method("rlw", ["a", "b"], seed=0)
    x = torch.tensor([1.0, 2.0], requires_grad=True)
    logs = m.backward({"a": x[0] * 3, "b": x[1] * 5}, shared_params=[])
    w = torch.tensor([logs["weight/a"], logs["weight/b"]])
    torch.testing.assert_close(x.grad, w * torch.tensor([3.0, 5.0]))


def test_dwa_weights_from_epoch_means():
    m = build_method("dwa", ["a", "b"])
    torch.testing.assert_close(m.weights(torch.ones(2)), torch.ones(2))  # uniform before two epochs
    m.on_epoch_end({"a": 1.0, "b": 1.0})
    m.on_epoch_end({"loss/a": 0.5, "loss/b": 1.0})  # a halves, b stalls: b gets more weight
    w = m.weights(torch.ones(2))
    expected = 2 * torch.softmax(torch.tensor([0.5, 1.0]) / 2.0, dim=0)  # Liu et al. 2019, DWA Eq. 7
    torch.testing.assert_close(w, expected)
    with pytest.raises(KeyError, match="lack the mean loss of task 'b'"):
        m.on_epoch_end({"a": 1.0})
    fresh = build_method("dwa", ["a", "b"])
    fresh.load_state_dict(m.state_dict())
    torch.testing.assert_close(fresh.weights(torch.ones(2)), w)


def test_uw_parameters_are_learnable():
    m = build_method("uw", NAMES)
    assert [p.shape for p in m.parameters()] == [torch.Size([3])]
    losses = {t: torch.tensor(v, requires_grad=True) for t, v in zip(NAMES, (0.5, 1.0, 4.0))}
    m.backward(losses, shared_params=[])
    # d/ds (1/2 e^-s L + 1/2 s) at s = 0 is (1 - L) / 2
    torch.testing.assert_close(m.log_var.grad, torch.tensor([0.25, 0.0, -1.5]))


def test_stch_approaches_the_max_and_log_nadir_schedule():
    losses = torch.tensor([1.0, 3.0, 2.0])
    small = build_method("stch", NAMES, mu=1e-3, preference=[1.0, 1.0, 1.0])
    assert abs(float(small.combine(losses)) - 3.0) <= 1e-3 * math.log(3) + 1e-6  # Prop. 3.3 bound
    w = small.weights(losses)
    torch.testing.assert_close(w, torch.tensor([0.0, 1.0, 0.0]), atol=1e-4, rtol=0)
    m = build_method("stch", NAMES, mu=0.5, normalize="log_nadir", warmup_epochs=1)
    torch.testing.assert_close(m.combine(losses), torch.log(losses).sum())  # warm-up: sum of logs
    m.on_epoch_end({"a": 2.0, "b": 3.0, "c": 4.0})
    torch.testing.assert_close(m.nadir, torch.tensor([2.0, 3.0, 4.0]))
    f = torch.log(losses / m.nadir) / 3
    torch.testing.assert_close(m.combine(losses), 0.5 * torch.logsumexp(f / 0.5, dim=0))


def test_gradnorm_moves_weight_towards_the_slow_task():
    """Two heads on one shared layer; after the first call (which records L(0)), task b's loss is
    relatively larger, so its target gradient norm is larger and its weight must grow (GradNorm Eq. 2)."""
    torch.manual_seed(0)
    shared = torch.nn.Linear(4, 4)
    x = torch.randn(16, 4)
    m = build_method("gradnorm", ["a", "b"], alpha=1.5)

    def losses(scale_b):
        z = shared(x)
        return {"a": (z[:, 0] ** 2).mean(), "b": scale_b * (z[:, 1] ** 2).mean()}

    m.backward(losses(1.0), shared_params=list(shared.parameters()))
    m.loss_scale.grad = None
    with torch.no_grad():
        shared.weight[0] *= 0.5  # task a has "trained" faster: L_a(t)/L_a(0) drops
    logs = m.backward(losses(1.0), shared_params=list(shared.parameters()))
    assert float(m.loss_scale.grad[1]) < 0 < float(m.loss_scale.grad[0])  # descent raises w_b
    assert math.isclose(logs["weight/a"] + logs["weight/b"], 2.0, rel_tol=1e-6)
    with pytest.raises(ValueError, match="matrix-shaped shared parameter"):
        m.backward(losses(1.0), shared_params=[shared.bias])


def test_stl_is_single_task_and_splits_configs():
    with pytest.raises(ValueError, match="single_task_configs"):
        build_method("stl", NAMES)
    build_method("stl", ["depth"])
    cfg = get_config("ci", ['loss.task_weights={"depth": 2.0}'])
    runs = list(single_task_configs(cfg))
    assert [t for t, _ in runs] == list(cfg.data.tasks)
    for task, sub in runs:
        assert sub.data.tasks == (task,) and sub.train.method == "stl"
        assert sub.train.out_dir.endswith(f"stl-{task}")
        assert sub.loss.task_weights == ({"depth": 2.0} if task == "depth" else {})
        sub.validate()


def test_moml_meta_step_restores_the_model_and_upweights_the_useful_task():
    """The held-out loss only measures task a; a look-ahead step on task a helps it, so MOML's
    upper level raises lambda_a; the model's parameters and .grad are left untouched."""
    x, y = make_problem(2, seed=0)
    model = TinyMTL(2, seed=0)
    names = ["a", "b"]
    m = build_method("moml", names, inner_lr=0.05, meta_lr=0.2)
    assert m.uses_validation_batch
    before = [p.detach().clone() for p in model.parameters()]
    for p in model.parameters():
        p.grad = torch.ones_like(p)

    def loss_fn(batch):
        _, losses = task_losses(model, batch["x"], batch["y"], names)
        return losses

    val = {"x": x, "y": y.clone()}
    val["y"][:, 1] = 0.0  # the held-out batch of task b says nothing useful about the train task b

    for _ in range(3):
        logs = m.meta_step(loss_fn, {"x": x, "y": y}, val, list(model.parameters()))
    for p, b in zip(model.parameters(), before):
        torch.testing.assert_close(p, b, rtol=0, atol=0)
        torch.testing.assert_close(p.grad, torch.ones_like(p))
    w = m.weights(torch.ones(2))
    assert math.isclose(float(w.sum()), 2.0, rel_tol=1e-5)
    assert float(w[0]) > 1.0 > float(w[1]) and logs["moml/hypergrad_norm"] > 0


def test_repmtl_needs_features_and_regularisers_are_bounded():
    x, y = make_problem(3)
    model = TinyMTL(3)
    feats, losses = task_losses(model, x, y, NAMES)
    m = build_method("repmtl", NAMES)
    with pytest.raises(ValueError, match="shared features"):
        m.backward(losses, shared_params=model.shared_parameters())
    sal = m.saliency(torch.stack([losses[t] for t in NAMES]), feats)
    assert sal.shape == (3, *feats.shape)
    tsr = float(m.tsr_loss(sal).detach())
    assert 0.0 <= tsr <= 1.0 + 1e-6
    assert float(m.csa_loss(sal).detach()) >= 0.0
    # identical saliencies for every task: the task distribution is uniform, entropy maximal (1)
    same = sal[:1].expand(3, *sal.shape[1:])
    assert math.isclose(float(m.tsr_loss(same).detach()), 1.0, rel_tol=1e-5)
    logs = m.backward(losses, shared_params=model.shared_parameters(), features=feats)
    assert set(logs) == {"repmtl/tsr", "repmtl/csa"}


def test_gradnorm_trains_a_dual_stream_model_whose_last_shared_matrix_no_task_reaches(tmp_path):
    # the dual-stream model's residual stream and decoder are shared parameters that no task loss
    # reaches: W must be the last shared matrix the task losses do reach (it crashed on a None gradient)
    from coremtl_lite.config import get_config
    from coremtl_lite.train import Trainer

    cfg = get_config(
        "ci",
        [
            "train.method=gradnorm",
            "train.progress=false",
            f"train.out_dir={tmp_path}",
            "train.checkpoint_every=0",
            "optim.epochs=1",
        ],
    )
    assert cfg.model.architecture == "dual_stream"
    trainer = Trainer(cfg)
    trainer.fit()
    method = trainer.method
    reached = [p for p in trainer.model.shared_parameters() if id(p) in method._reached]
    unreached = [
        p for p in trainer.model.shared_parameters() if p.dim() >= 2 and id(p) not in method._reached
    ]
    assert reached and unreached  # both kinds exist in this model
    assert torch.isfinite(method.loss_scale.detach()).all() and (method.loss_scale.detach() > 0).all()
