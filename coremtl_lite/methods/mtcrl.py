"""MT-CRL: Hu, Zhao, Chen, Wang & Sun, "Improving Multi-Task Generalization via Regularizing Spurious
Correlation", NeurIPS 2022 (``../shared/papers/mt-crl-paper.md``; SPEC §3).

MT-CRL = a modular model (:class:`coremtl_lite.models.mtcrl_model.MTCRLModel`: K MMoE experts
Phi_i, routing A = sigmoid(theta) in [0,1]^{T x K}, y_t = f_t(sum_i A_ti Phi_i(x)), §3.1) plus this
method's three regularisers:

* decorrelation between modules, Eq. 1-2 (:func:`decorrelation_loss`);
* sparsity + entropy balance of the task-to-module graph, Eq. 3 (:func:`graph_loss`);
* Graph-IRM on the train/valid environments, Eq. 8 (norm) and Eq. 9 (variance)
  (:func:`girm_penalty`), with the per-task predictors f_t held fixed (Algorithm 1, line 11).

The functions are pure and can be read and tested on hand-made tensors.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from coremtl_lite.methods.base import register
from coremtl_lite.methods.irm import EnvironmentPenaltyMethod
from coremtl_lite.models.mtcrl_model import ROUTING_FLAG

GIRM_FORMS = ("var", "norm")


# ------------------------------------------------------------------------------------- the losses
def pearson_cross_correlation(z_i: Tensor, z_j: Tensor, eps: float = 1e-8) -> Tensor:
    """In-batch Pearson correlation ``rho(Z_i, Z_j)`` between every column of ``z_i`` (B, D_i) and of ``z_j``
    (B, D_j): a (D_i, D_j) matrix (MT-CRL Eq. 1). A constant column has correlation 0 with everything."""
    if z_i.dim() != 2 or z_j.dim() != 2 or z_i.shape[0] != z_j.shape[0]:
        raise ValueError(f"pearson_cross_correlation needs (B, D_i) and (B, D_j) with the same B, got "
                         f"{tuple(z_i.shape)} and {tuple(z_j.shape)}")
    ci = z_i - z_i.mean(0, keepdim=True)
    cj = z_j - z_j.mean(0, keepdim=True)
    cov = ci.T @ cj  # Cov(Z_i, Z_j) = [Z_i - mean]^T [Z_j - mean], Eq. 1
    ni = ci.pow(2).sum(0).clamp_min(eps).sqrt()
    nj = cj.pow(2).sum(0).clamp_min(eps).sqrt()
    return cov / (ni[:, None] * nj[None, :])  # Eq. 1


def module_correlations(modules: Tensor, eps: float = 1e-8) -> Tensor:
    """``(K, K)`` matrix of ``||rho(Z_i, Z_j)||_F^2`` for the stacked module outputs ``modules`` (B, K, D)."""
    if modules.dim() != 3:
        raise ValueError(f"module outputs must be (B, K, D) -- K modules of D dims -- got {tuple(modules.shape)}")
    b, k, d = modules.shape
    z = modules.reshape(b, k * d)
    c = z - z.mean(0, keepdim=True)
    c = c / c.pow(2).sum(0, keepdim=True).clamp_min(eps).sqrt()
    rho = (c.T @ c).view(k, d, k, d)  # all Pearson correlations at once, Eq. 1
    return rho.pow(2).sum(dim=(1, 3))


def decorrelation_loss(modules: Tensor, eps: float = 1e-8) -> Tensor:
    """``sum_{i<j} ||rho(Phi_i(X), Phi_j(X))||_F^2`` over the K modules of ``modules`` (B, K, D) (MT-CRL Eq. 2,
    without its weight lambda_decor). Zero when every pair of modules is uncorrelated in the batch."""
    m = module_correlations(modules, eps)
    return torch.triu(m, diagonal=1).sum()  # Eq. 2


def module_usage(routing: Tensor) -> Tensor:
    """``sum_t A_{t,.} / sum_{t,i} A_{t,i}``: how much of the graph's total weight each module gets (K,)."""
    if routing.dim() != 2:
        raise ValueError(f"the routing graph A must be (T, K), got {tuple(routing.shape)}")
    return routing.sum(0) / routing.sum().clamp_min(1e-12)


def routing_entropy(routing: Tensor) -> Tensor:
    """Entropy of the module usage of ``routing`` A (T, K) (the balance term of MT-CRL Eq. 3); maximal,
    log K, when every module carries the same total weight."""
    p = module_usage(routing)
    return -(p * p.clamp_min(1e-12).log()).sum()


def graph_loss(routing: Tensor, lambda_sps: float, lambda_bal: float) -> Tensor:
    """``lambda_sps ||A||_1 - lambda_bal Entropy(sum_t A_t / sum A)`` (MT-CRL Eq. 3) for A (T, K) in [0, 1]."""
    return lambda_sps * routing.abs().sum() - lambda_bal * routing_entropy(routing)  # Eq. 3


def girm_penalty(env_grads: Tensor, form: str = "var") -> Tensor:
    """The G-IRM penalty from the routing gradients ``env_grads[e, t] = grad_{A_t} R_t^e`` (E, T, K).

    * ``form="norm"`` (Eq. 8): ``sum_t sum_e ||g_t^e||^2``;
    * ``form="var"`` (Eq. 9): ``sum_t sum_e (1/|E|) ||g_t^e - mean_e g_t^e||^2``, zero whenever the
      environments agree.
    """
    if env_grads.dim() != 3:
        raise ValueError(f"env_grads must be (E, T, K), got {tuple(env_grads.shape)}")
    if form == "norm":
        return env_grads.pow(2).sum()  # Eq. 8
    if form == "var":
        dev = env_grads - env_grads.mean(0, keepdim=True)
        return dev.pow(2).sum() / env_grads.shape[0]  # Eq. 9
    raise ValueError(f"G-IRM form must be one of {GIRM_FORMS}, got {form!r}")


def find_routing(params: Sequence[Tensor], who: str = "mtcrl") -> Tensor:
    """The routing logits theta (A = sigmoid(theta)) among ``params``: the tensor the MT-CRL model flags
    with ``ROUTING_FLAG``. An error names what to do when the model has none."""
    found = [p for p in params if getattr(p, ROUTING_FLAG, False)]
    if len(found) != 1:
        raise ValueError(f"{who} needs exactly one task-to-module routing parameter (an MT-CRL model, "
                         f"coremtl_lite.models.mtcrl_model.MTCRLModel); found {len(found)} among "
                         f"{len(params)} parameters")
    return found[0]


# ------------------------------------------------------------------------------------- the method
@register("mtcrl")
class MTCRL(EnvironmentPenaltyMethod):
    """MT-CRL's regularised objective (Eq. 4 + Eq. 7) for an :class:`MTCRLModel` (Algorithm 1).

    ``backward`` back-propagates (lines 1-10 of Algorithm 1)

        sum_t R_t^train + lambda_decor L_decor(Phi) + L_graph(A)  [+ extra_loss]

    with ``features`` = the stacked module outputs (B, K, D) the model returns and A read from the
    flagged routing parameter in ``shared_params``; L_decor is computed once on the shared batch
    (Algorithm 1 adds it inside its per-task loop because each task has its own batch there).

    ``meta_step`` (lines 11-17) takes the two environments e in {train, valid} from the trainer's
    held-out hook, computes g_t^e = grad_{A_t} R_t^e with ``create_graph``, the penalty of
    :func:`girm_penalty`, and its gradient with respect to A and the modules Phi only -- the per-task
    predictors f_t are held fixed (line 11), so they get none. That gradient, times
    ``lambda_girm``, is added by the next ``backward`` (line 17).

    ``grad_{A_t}`` is taken as ``grad_{theta_t} / (A_t (1 - A_t))`` (the chain rule through the
    sigmoid, exact), and all tasks' rows come from one backward pass of ``sum_t R_t`` since R_t
    depends on row t of A only.

    Defaults: the paper's tuned weights (appendix H): lambda_sps 0.2, lambda_bal 5, lambda_decor 20,
    lambda_G-IRM 5, variance form.
    """

    def __init__(self, task_names, lambda_decor: float = 20.0, lambda_sps: float = 0.2,
                 lambda_bal: float = 5.0, lambda_girm: float = 5.0, girm_form: str = "var",
                 anneal_steps: int = 0):
        super().__init__(task_names, penalty_weight=lambda_girm, anneal_steps=anneal_steps)
        if girm_form not in GIRM_FORMS:
            raise ValueError(f"mtcrl: girm_form must be one of {GIRM_FORMS}, got {girm_form!r}")
        for name, value in (("lambda_decor", lambda_decor), ("lambda_sps", lambda_sps),
                            ("lambda_bal", lambda_bal)):
            if value < 0:
                raise ValueError(f"mtcrl: {name} must be >= 0, got {value}")
        self.lambda_decor, self.lambda_sps, self.lambda_bal = float(lambda_decor), float(lambda_sps), float(lambda_bal)
        self.girm_form = girm_form

    # lines 1-9 of Algorithm 1 (the task risks come from the trainer)
    def extra_terms(self, losses, shared_params, features):
        if features is None or features.dim() != 3:
            shape = None if features is None else tuple(features.shape)
            raise ValueError(f"mtcrl needs features = the stacked module outputs (B, K, D) of an MT-CRL model; "
                             f"got {shape}")
        theta = find_routing(shared_params)
        routing = torch.sigmoid(theta)
        decor = decorrelation_loss(features)  # Eq. 2
        graph = graph_loss(routing, self.lambda_sps, self.lambda_bal)  # Eq. 3
        logs = {"mtcrl/decor": float(decor.detach()), "mtcrl/graph": float(graph.detach()),
                "mtcrl/entropy": float(routing_entropy(routing.detach())),
                "mtcrl/A_mean": float(routing.detach().mean())}
        return self.lambda_decor * decor + graph, logs  # Eq. 4

    def routing_gradients(self, losses: Tensor, theta: Tensor, create_graph: bool = True) -> Tensor:
        """``(T, K)``: row t is ``grad_{A_t} R_t`` for the ordered task losses (see the class docstring)."""
        (g_theta,) = torch.autograd.grad(losses.sum(), theta, create_graph=create_graph)
        a = torch.sigmoid(theta)
        return g_theta / (a * (1 - a)).clamp_min(1e-12)  # dR/dA = dR/dtheta / sigmoid'(theta)

    # lines 11-17 of Algorithm 1
    def penalty_grads(self, loss_fn, train_batch, val_batch, params):
        theta = find_routing(params)
        env_grads, predictors = [], set()
        for batch in (train_batch, val_batch):  # e in {train, valid} (line 14)
            losses = self.task_losses(loss_fn(batch))
            predictors = set().union(*self.predictors(losses, params))
            env_grads.append(self.routing_gradients(torch.stack(losses), theta))
        penalty = girm_penalty(torch.stack(env_grads), self.girm_form)  # Eq. 8 / Eq. 9 (line 15)
        logs = {"mtcrl/girm": float(penalty.detach())}
        weight = self.current_weight()
        if weight == 0.0:
            return [], logs
        targets = [p for p in params if id(p) not in predictors]  # f_t detached (line 11)
        grads = torch.autograd.grad(weight * penalty, targets, allow_unused=True)  # line 17
        return [(p, g) for p, g in zip(targets, grads) if g is not None], logs
