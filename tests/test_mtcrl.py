"""MT-CRL (Hu et al. 2022): its losses on hand-made tensors, the spurious score, and IRM / DANN / MT-CRL training."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from _train_helpers import ReadBacks
from torch import nn

from coremtl_lite import viz
from coremtl_lite.diagnostics import spurious
from coremtl_lite.methods import dann, irm, mtcrl  # noqa: F401  (importing registers the methods)
from coremtl_lite.methods.base import build_method
from coremtl_lite.models.mtcrl_model import ROUTING_FLAG, build_mtcrl_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ------------------------------------------------------------------------------ decorrelation (MT-CRL Eq. 1-2)
def test_decorrelation_exactly_zero_for_orthogonal_centred_blocks():
    # Hadamard columns: centred, mutually orthogonal, small integers -> exact arithmetic
    h = torch.tensor([[1.0, 1, 1, 1], [1, -1, 1, -1], [1, 1, -1, -1], [1, -1, -1, 1]]).T  # columns
    modules = torch.stack([h[:, 1:2], h[:, 2:3], h[:, 3:4]], dim=1)  # (B=4, K=3, D=1)
    assert mtcrl.decorrelation_loss(modules).item() == 0.0
    two_dim = torch.stack([h[:, 1:3], h[:, 3:4].expand(4, 2)], dim=1)  # module 0 = cols 1,2; module 1 = col 3
    assert mtcrl.decorrelation_loss(two_dim).item() == 0.0


def test_decorrelation_near_zero_for_independent_and_counts_correlated_pairs():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(20000, 4, 3, generator=g)
    assert mtcrl.decorrelation_loss(z).item() < 0.01  # 6 pairs x 9 entries of size ~1/B each
    # module 1 = a copy of module 0: ||rho||_F^2 = 3 (identity correlation) plus noise
    z2 = z.clone()
    z2[:, 1] = z[:, 0]
    assert mtcrl.decorrelation_loss(z2).item() == pytest.approx(3.0, abs=0.02)
    # matches the pairwise definition of MT-CRL Eq. 1
    small = torch.randn(64, 3, 2, generator=g)
    ref = sum(
        mtcrl.pearson_cross_correlation(small[:, i], small[:, j]).pow(2).sum()
        for i in range(3)
        for j in range(i + 1, 3)
    )
    assert mtcrl.decorrelation_loss(small).item() == pytest.approx(ref.item(), rel=1e-5)


def test_pearson_matches_numpy_and_is_safe_for_constant_columns():
    g = torch.Generator().manual_seed(1)
    a, b = (
        torch.randn(50, 2, generator=g, dtype=torch.float64),
        torch.randn(50, 1, generator=g, dtype=torch.float64),
    )
    b = b + a[:, :1]
    import numpy as np

    ref = np.corrcoef(a.numpy().T, b.numpy().T)[:2, 2:]
    assert torch.allclose(mtcrl.pearson_cross_correlation(a, b), torch.from_numpy(ref), atol=1e-10)
    const = torch.ones(50, 2)
    out = mtcrl.pearson_cross_correlation(const, b.float())
    assert torch.isfinite(out).all() and out.abs().max() == 0
    with pytest.raises(ValueError, match="B, K, D"):
        mtcrl.decorrelation_loss(torch.randn(5, 4))


# ------------------------------------------------------------------------------------ graph (MT-CRL Eq. 3)
def test_entropy_is_maximal_for_uniform_module_usage():
    k = 8
    uniform = torch.full((3, k), 0.5)
    assert mtcrl.routing_entropy(uniform).item() == pytest.approx(math.log(k), rel=1e-6)
    g = torch.Generator().manual_seed(2)
    for _ in range(20):
        a = torch.rand(3, k, generator=g)
        assert mtcrl.routing_entropy(a).item() < math.log(k)
    one_module = torch.zeros(3, k)
    one_module[:, 0] = 1.0
    assert mtcrl.routing_entropy(one_module).item() == pytest.approx(0.0, abs=1e-6)
    # usage is over the column sums: different rows with the same column sums give the same entropy
    perm = torch.tensor([[1.0, 0], [0, 1]])
    assert mtcrl.routing_entropy(perm).item() == pytest.approx(math.log(2))


def test_graph_loss_value_and_gradient():
    a = torch.tensor([[1.0, 0.0], [0.0, 0.5]], requires_grad=True)
    p = torch.tensor([1.0, 0.5]) / 1.5
    ent = -(p * p.log()).sum()
    loss = mtcrl.graph_loss(a, lambda_sps=0.2, lambda_bal=5.0)
    assert loss.item() == pytest.approx(0.2 * 1.5 - 5.0 * ent.item(), rel=1e-6)
    loss.backward()
    # the balance term pushes the under-used module (column 1) up: its gradient is smaller
    assert a.grad[0, 1] < a.grad[0, 0]


# ---------------------------------------------------------------------------------- G-IRM (MT-CRL Eq. 8-9)
def test_girm_zero_when_environments_agree():
    g = torch.randn(1, 3, 8, generator=torch.Generator().manual_seed(3))
    agree = g.expand(2, 3, 8)
    assert mtcrl.girm_penalty(agree, "var").item() == 0.0
    assert mtcrl.girm_penalty(agree, "norm").item() == pytest.approx(2 * g.pow(2).sum().item(), rel=1e-6)
    differ = torch.stack([g[0], g[0] + 1.0])  # environments 1 apart in every entry
    # var: sum_t sum_e (1/2) ||g_e - mean||^2 = 2 envs * (1/2) * 24 entries * 0.25
    assert mtcrl.girm_penalty(differ, "var").item() == pytest.approx(6.0, rel=1e-6)
    assert mtcrl.girm_penalty(torch.zeros(2, 3, 8), "norm").item() == 0.0
    with pytest.raises(ValueError, match="form"):
        mtcrl.girm_penalty(differ, "l1")


def _toy_batch(n, m_c, seed, dim=3):
    """A two-task SEM batch (MT-CRL appendix D.1): Y_b = Y_a with probability m_c."""
    g = torch.Generator().manual_seed(seed)
    ya = (torch.rand(n, generator=g) < 0.5).long()
    yb = torch.where(torch.rand(n, generator=g) < m_c, ya, 1 - ya)
    x = torch.cat(
        [
            (2 * ya - 1)[:, None] * 1.0 + torch.randn(n, dim, generator=g),
            (2 * yb - 1)[:, None] * 1.0 + torch.randn(n, dim, generator=g),
        ],
        1,
    )
    return {"image": x, "task_a": ya, "task_b": yb}


TASKS = ["task_a", "task_b"]


def _loss_fn(model):
    def loss_fn(batch, return_outputs=False):
        out = model(batch["image"])
        losses = {t: F.cross_entropy(out["preds"][t], batch[t]) for t in TASKS}
        return (losses, out) if return_outputs else losses

    return loss_fn


def test_girm_routing_gradients_match_autograd_on_A():
    model = build_mtcrl_model((6,), {t: 2 for t in TASKS}, num_modules=4, module_dim=3, seed=0)
    with torch.no_grad():
        model.theta.copy_(torch.randn(2, 4, generator=torch.Generator().manual_seed(5)) / model.routing_scale)
    batch = _toy_batch(32, 0.9, 0)
    method = build_method("mtcrl", TASKS)
    losses = method._ordered(_loss_fn(model)(batch))
    got = method.routing_gradients(losses, model.theta, create_graph=False)
    # reference: differentiate with respect to A itself
    z = model.experts(batch["image"])
    a = model.routing().detach().requires_grad_(True)
    mixed = torch.einsum("tk,bkd->tbd", a, z)
    ref_losses = [F.cross_entropy(model.heads[t](mixed[i]), batch[t]) for i, t in enumerate(TASKS)]
    (ref,) = torch.autograd.grad(sum(ref_losses), a)
    assert torch.allclose(got, ref, atol=1e-5, rtol=1e-4)


def test_girm_penalty_gradient_skips_predictors_and_reaches_modules():
    model = build_mtcrl_model((6,), {t: 2 for t in TASKS}, num_modules=4, module_dim=3, seed=0)
    method = build_method("mtcrl", TASKS, lambda_girm=1.0)
    params = list(model.parameters())
    logs = method.meta_step(_loss_fn(model), _toy_batch(32, 0.9, 0), _toy_batch(32, 0.1, 1), params)
    assert logs["mtcrl/girm"] > 0
    got = {id(p) for p, _ in method._pending}
    assert all(id(p) not in got for p in model.heads.parameters())  # f_t held fixed (Alg. 1 line 11)
    assert id(model.theta) in got and any(id(p) in got for p in model.experts.parameters())
    assert all(p.grad is None for p in params)  # meta_step leaves .grad alone
    # the same batch in both environments: the variance form is exactly zero
    same = _toy_batch(32, 0.9, 0)
    method2 = build_method("mtcrl", TASKS)
    assert method2.meta_step(_loss_fn(model), same, same, params)["mtcrl/girm"] == 0.0


def test_routing_is_flagged_and_required():
    model = build_mtcrl_model((6,), {t: 2 for t in TASKS}, num_modules=4, module_dim=3)
    assert getattr(model.theta, ROUTING_FLAG) and any(p is model.theta for p in model.shared_parameters())
    assert mtcrl.find_routing(model.shared_parameters()) is model.theta
    with pytest.raises(ValueError, match="routing"):
        mtcrl.find_routing([nn.Parameter(torch.zeros(2))])
    out = model(torch.randn(5, 6))
    assert out["features"].shape == (5, 4, 3) and out["routing"].shape == (2, 4)
    assert set(out["preds"]) == set(TASKS) and out["preds"]["task_a"].shape == (5, 2)
    img_model = build_mtcrl_model((3, 8, 16), {"left": 10, "right": 10}, num_modules=8, module_dim=4)
    assert img_model(torch.rand(2, 3, 8, 16))["features"].shape == (2, 8, 4)


# ---------------------------------------------------------------------------------- spurious score
class _MaskedNet(nn.Module):
    """Each task's head sees only the inputs its mask lets through."""

    def __init__(self, masks, d_in):
        super().__init__()
        self.masks = masks
        self.heads = nn.ModuleDict(
            {t: nn.Sequential(nn.Linear(d_in, 8), nn.Tanh(), nn.Linear(8, 2)) for t in masks}
        )

    def forward(self, x):
        return {"preds": {t: h(x * self.masks[t].float()) for t, h in self.heads.items()}}


def test_spurious_score_zero_for_causal_only_model_and_high_for_shortcut():
    torch.manual_seed(0)
    mask = torch.zeros(6, dtype=torch.bool)
    mask[:3] = True
    masks = {"task_a": mask, "task_b": ~mask}
    batch = _toy_batch(64, 0.9, 2)
    causal = _MaskedNet(masks, 6)
    scores = spurious.spurious_scores(causal, batch, masks)
    assert scores["task_a"] == 0.0 and scores["task_b"] == 0.0 and scores["mean"] == 0.0
    shortcut = _MaskedNet({"task_a": ~mask, "task_b": mask}, 6)  # each task reads the other's factors
    assert spurious.spurious_scores(shortcut, batch, masks)["mean"] == pytest.approx(1.0, abs=1e-6)
    # images: an (H, W) mask broadcasts over the channels
    img_mask = torch.zeros(4, 8, dtype=torch.bool)
    img_mask[:, :4] = True

    class Left(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(3 * 4 * 4, 10)

        def forward(self, x):
            return {"preds": {"left": self.lin(x[..., :4].flatten(1))}}

    imgs = {"image": torch.rand(5, 3, 4, 8), "left": torch.arange(5)}
    assert spurious.spurious_score(Left(), imgs, "left", img_mask) == 0.0
    assert spurious.spurious_score(Left(), imgs, "left", ~img_mask) == pytest.approx(1.0, abs=1e-6)
    assert spurious.saliency_map(Left(), imgs, "left").shape == (4, 8)


def test_task_module_gradients_and_similarity():
    model = build_mtcrl_model((6,), {t: 2 for t in TASKS}, num_modules=4, module_dim=3, seed=1)
    batch = _toy_batch(32, 0.9, 3)
    g = spurious.task_module_gradients(model, batch)
    assert g.shape == (2, 4) and torch.isfinite(g).all()
    # it is A * d(out)/dA (in eval mode: the module outputs use the running statistics)
    model.eval()
    z = model.experts(batch["image"])
    a = model.routing().detach().requires_grad_(True)
    mixed = torch.einsum("tk,bkd->tbd", a, z)
    out = sum(
        spurious.true_class_output(model.heads[t](mixed[i]), batch[t], t).mean() for i, t in enumerate(TASKS)
    )
    (ga,) = torch.autograd.grad(out, a)
    assert torch.allclose(g, a.detach() * ga, atol=1e-5)
    sim = spurious.task_similarity(torch.tensor([[1.0, 0, 0], [1.0, 0, 0], [0, 0, 1.0]]))
    assert torch.allclose(sim, torch.tensor([[1.0, 1, 0], [1, 1, 0], [0, 0, 1]]))
    sim = spurious.task_similarity(torch.tensor([[1.0, 0], [0.9, 0.1]]))
    assert len(viz.plot_task_graph(sim, ["a", "b"]).data) == 2


# ------------------------------------------------------------------------------------- training
def _train(name, steps=30, **opts):
    torch.manual_seed(0)
    model = build_mtcrl_model((6,), {t: 2 for t in TASKS}, num_modules=4, module_dim=4, seed=0)
    method = build_method(name, TASKS, **opts)
    loss_fn = _loss_fn(model)
    train, val = _toy_batch(256, 0.9, 10), _toy_batch(128, 0.5, 11)
    opt = torch.optim.Adam([*model.parameters(), *method.parameters()], lr=1e-2)
    first = sum(loss_fn(train).values()).item()
    for _ in range(steps):
        method.meta_step(loss_fn, train, val, list(model.parameters()))
        opt.zero_grad()
        out = model(train["image"])
        losses = {t: F.cross_entropy(out["preds"][t], train[t]) for t in TASKS}
        logs = method.backward(losses, shared_params=model.shared_parameters(), features=out["features"])
        assert all(math.isfinite(v) for v in logs.values()), logs
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
        opt.step()
    return first, sum(loss_fn(train).values()).item(), model, logs


@pytest.mark.parametrize("name", ["mtcrl", "irm", "dann"])
def test_methods_train_without_nan(name):
    first, last, _, logs = _train(name)
    assert last < first, f"{name}: {first:.3f} -> {last:.3f}"
    assert any(k.startswith(name) for k in logs)


def test_mtcrl_regularisers_act():
    _, _, plain, _ = _train(
        "mtcrl", steps=40, lambda_decor=0.0, lambda_sps=0.0, lambda_bal=0.0, lambda_girm=0.0
    )
    _, _, reg, _ = _train(
        "mtcrl", steps=40, lambda_decor=20.0, lambda_sps=0.2, lambda_bal=0.0, lambda_girm=0.0
    )
    x = _toy_batch(256, 0.9, 10)["image"]
    with torch.no_grad():
        assert mtcrl.decorrelation_loss(reg(x)["features"]) < mtcrl.decorrelation_loss(plain(x)["features"])
        assert reg.routing().sum() < plain.routing().sum()  # the L1 sparsity term shrinks A


def test_backward_without_meta_step_is_an_error():
    method = build_method("irm", TASKS)
    with pytest.raises(RuntimeError, match="meta_step"):
        method.backward({t: torch.zeros((), requires_grad=True) for t in TASKS}, shared_params=[])
    with pytest.raises(ValueError, match="girm_form"):
        build_method("mtcrl", TASKS, girm_form="l2")


@pytest.mark.parametrize(
    "method,arch", [("mtcrl", "mtcrl"), ("irm", "mtcrl"), ("dann", "mtcrl"), ("irm", "vanilla")]
)
def test_methods_train_through_the_one_training_loop(method, arch, tmp_path):
    """MT-CRL, IRM and DANN run in the Trainer via the generic held-out hook, no name branches."""
    from coremtl_lite.config import get_config
    from coremtl_lite.train import Trainer

    cfg = get_config(
        "ci",
        [
            "data.dataset=digit_pairs",
            "data.tasks=left,right",
            "data.eval_domains=source,target",
            f"model.architecture={arch}",
            "model.grounding=none",
            f"train.method={method}",
            f"train.out_dir={tmp_path}",
            "train.checkpoint_every=0",
        ],
    )
    trainer = Trainer(cfg)
    history = trainer.fit()
    losses = [r["loss/total"] for r in history.steps]
    assert len(losses) == trainer.step > 0 and all(math.isfinite(v) for v in losses)
    results = trainer.evaluate()
    assert set(results) == {"source", "target"} and 0.0 <= results["target"]["left"]["acc"] <= 1.0


# ------------------------------------------------------------ scale, mean decorrelation, logging
def test_decorrelation_mean_and_sampling_floor():
    """The mean is the sum over K(K-1)/2 x D^2 entries; independent modules sit at the floor 1/(B-1)."""
    z = torch.randn(64, 8, 16, generator=torch.Generator().manual_seed(0))
    total = mtcrl.decorrelation_loss(z)
    mean = mtcrl.decorrelation_loss(z, reduction="mean")
    assert mean.item() == pytest.approx(total.item() / (28 * 256), rel=1e-6)
    assert mean.item() == pytest.approx(1 / 63, rel=0.1)  # E[rho^2] = 1/(B-1) for independent columns
    floored = mtcrl.decorrelation_loss(z, reduction="mean", subtract_floor=True)
    assert abs(floored.item()) < 0.1 / 63
    correlated = z[:, :1].expand(64, 8, 16)  # every module the same: rho = 1 for the D matching columns
    expected = 1 / 16 + (1 - 1 / 16) / 63  # D of the D^2 entries are 1, the others at the floor
    assert mtcrl.decorrelation_loss(correlated, reduction="mean").item() == pytest.approx(expected, rel=0.1)
    assert mtcrl.decorrelation_loss(torch.randn(10, 1, 4)).item() == 0.0  # K = 1: no pairs
    with pytest.raises(ValueError, match="reduction"):
        mtcrl.decorrelation_loss(z, reduction="max")


@pytest.mark.parametrize("shape", [(6,), (3, 16, 32)])
def test_module_outputs_have_unit_scale(shape):
    """ModuleNorm: every module output dimension has unit batch std in training (not ~0.01)."""
    model = build_mtcrl_model(shape, {"a": 2, "b": 2}, num_modules=4, module_dim=4, seed=0)
    x = torch.rand(64, *shape, generator=torch.Generator().manual_seed(1))
    z = model(x)["features"]
    assert torch.allclose(z.std(0, unbiased=False), torch.ones(4, 4), atol=0.01)
    model.eval()
    assert torch.isfinite(model(x[:1])["features"]).all()  # eval / one sample: running statistics


def test_routing_scale_is_the_graphs_own_learning_rate():
    """theta = s phi: an Adam step moves theta by s x lr, so A can leave [0.27, 0.73] in a short run."""
    model = build_mtcrl_model((6,), {"a": 2, "b": 2}, num_modules=4, module_dim=4, seed=0, routing_scale=10.0)
    opt = torch.optim.Adam([model.theta], lr=3e-3)
    for step in range(200):  # a constant push on A (the L1 sparsity term alone)
        opt.zero_grad()
        model.routing().sum().backward()
        opt.step()
        if step == 0:  # Adam's first step is lr x sign(gradient) on phi
            theta = model.routing_scale * model.theta.detach()
            torch.testing.assert_close(theta, torch.full_like(theta, -10 * 3e-3), rtol=1e-3, atol=1e-6)
    assert model.routing().max().item() < 0.05  # theta < -3: with s = 1 it could not pass -0.6
    with pytest.raises(ValueError, match="routing_scale"):
        build_mtcrl_model((6,), {"a": 2}, routing_scale=0.0)


def test_step_logs_give_terms_and_gradient_shares():
    assert build_method("ew", TASKS).step_logs() == {}
    _, _, _, logs = _train("mtcrl", steps=3)
    method = build_method("mtcrl", TASKS)
    assert method.step_logs() == {}
    model = build_mtcrl_model((6,), {t: 2 for t in TASKS}, num_modules=4, module_dim=4, seed=0)
    train, val = _toy_batch(64, 0.9, 10), _toy_batch(64, 0.5, 11)
    method.meta_step(_loss_fn(model), train, val, list(model.parameters()))
    out = model(train["image"])
    losses = {t: F.cross_entropy(out["preds"][t], train[t]) for t in TASKS}
    returned = method.backward(losses, shared_params=model.shared_parameters(), features=out["features"])
    got = method.step_logs()
    assert got == returned
    for where, terms in (("modules", ("task", "decor", "girm")), ("routing", ("task", "graph", "girm"))):
        shares = [got[f"mtcrl/share_{where}/{t}"] for t in terms]
        assert sum(shares) == pytest.approx(1.0) and all(0 <= s <= 1 for s in shares)
    assert got["mtcrl/gnorm_modules/decor"] > 0 and got["mtcrl/gnorm_routing/graph"] > 0
    assert got["mtcrl/task"] == pytest.approx(sum(v.item() for v in losses.values()), rel=1e-6)


def test_mtcrl_backward_fills_the_same_gradient_as_one_backward():
    """The per-term gradients (for the shares) add up to the gradient of the whole MT-CRL Eq. 4 objective."""
    model = build_mtcrl_model((6,), {t: 2 for t in TASKS}, num_modules=4, module_dim=4, seed=0)
    method = build_method("mtcrl", TASKS, lambda_girm=0.0)
    train = _toy_batch(64, 0.9, 10)
    method.meta_step(_loss_fn(model), train, train, list(model.parameters()))
    out = model(train["image"])
    losses = {t: F.cross_entropy(out["preds"][t], train[t]) for t in TASKS}
    method.backward(losses, shared_params=model.shared_parameters(), features=out["features"])
    got = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    out = model(train["image"])
    a = model.routing()
    total = (
        sum(F.cross_entropy(out["preds"][t], train[t]) for t in TASKS)
        + 20.0 * mtcrl.decorrelation_loss(out["features"], reduction="mean")
        + mtcrl.graph_loss(a, 0.2, 5.0)
    )
    total.backward()
    for n, p in model.named_parameters():
        torch.testing.assert_close(got[n], p.grad, rtol=1e-4, atol=1e-6)


def test_mtcrl_with_the_paper_weights_trains_and_sparsifies_the_graph():
    """Appendix H's weights (lambda_decor 20, sps 0.2, bal 5, G-IRM 5): the task loss falls and the graph
    switches modules off (A < 0.1 somewhere) within 150 steps."""
    first, last, model, logs = _train("mtcrl", steps=150)
    assert last < 0.8 * first, (first, last)
    assert model.routing().min().item() < 0.1, model.routing()
    assert logs["mtcrl/A_off"] > 0


@pytest.mark.parametrize("name", ["mtcrl", "irm"])
def test_logs_are_read_back_from_the_device_at_once(name):
    # the step's logged values (terms, graph statistics, gradient norms) come back in one read, not one
    # float(tensor) each: each of those waits for a GPU to finish
    model = build_mtcrl_model((6,), {t: 2 for t in TASKS}, num_modules=4, module_dim=4, seed=0)
    method = build_method(name, TASKS)
    train, val = _toy_batch(64, 0.9, 10), _toy_batch(64, 0.5, 11)
    with ReadBacks() as reads:
        meta = method.meta_step(_loss_fn(model), train, val, list(model.parameters()))
        out = model(train["image"])
        losses = {t: F.cross_entropy(out["preds"][t], train[t]) for t in TASKS}
        logs = method.backward(losses, shared_params=model.shared_parameters(), features=out["features"])
    # one read of the annealing's step counter, and MT-CRL's G-IRM value in its meta-step (17 and 4
    # reads before the logs were read back at once)
    assert reads.items == (2 if name == "mtcrl" else 1), reads.items
    assert len(logs) >= len(meta) >= 1 and all(type(v) is float for v in logs.values())
