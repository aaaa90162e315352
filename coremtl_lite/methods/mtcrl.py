"""MT-CRL: Hu, Zhao, Chen, Wang & Sun, "Improving Multi-Task Generalization via Regularizing Spurious
Correlation", NeurIPS 2022.

MT-CRL = a modular model (:class:`coremtl_lite.models.mtcrl_model.MTCRLModel`: K MMoE experts
Phi_i, routing A = sigmoid(theta) in [0,1]^{T x K}, y_t = f_t(sum_i A_ti Phi_i(x)), §3.1) plus this
method's three regularisers:

* decorrelation between modules, MT-CRL Eq. 1-2 (:func:`decorrelation_loss`), used by the method as a
  per-entry mean (see :class:`MTCRL` for why);
* sparsity + entropy balance of the task-to-module graph, MT-CRL Eq. 3 (:func:`graph_loss`);
* Graph-IRM on the train/valid environments, MT-CRL Eq. 8 (norm) and MT-CRL Eq. 9 (variance)
  (:func:`girm_penalty`), with the per-task predictors f_t held fixed (Algorithm 1, line 11).

The functions are pure and can be read and tested on hand-made tensors.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from coremtl_lite.methods.base import register
from coremtl_lite.methods.irm import EnvironmentPenaltyMethod
from coremtl_lite.models.mtcrl_model import ROUTING_FLAG, ROUTING_SCALE, routing_of
from coremtl_lite.runtime import as_floats

GIRM_FORMS = ("var", "norm")
DECOR_REDUCTIONS = ("mean", "sum")


# ------------------------------------------------------------------------------------- the losses
def pearson_cross_correlation(z_i: Tensor, z_j: Tensor, eps: float = 1e-8) -> Tensor:
    """In-batch Pearson correlation ``rho(Z_i, Z_j)`` between every column of ``z_i`` (B, D_i) and of ``z_j``
    (B, D_j): a (D_i, D_j) matrix (MT-CRL Eq. 1). A constant column has correlation 0 with everything."""
    if z_i.dim() != 2 or z_j.dim() != 2 or z_i.shape[0] != z_j.shape[0]:
        raise ValueError(
            f"pearson_cross_correlation needs (B, D_i) and (B, D_j) with the same B, got "
            f"{tuple(z_i.shape)} and {tuple(z_j.shape)}"
        )
    ci = z_i - z_i.mean(0, keepdim=True)
    cj = z_j - z_j.mean(0, keepdim=True)
    cov = ci.T @ cj  # Cov(Z_i, Z_j) = [Z_i - mean]^T [Z_j - mean], MT-CRL Eq. 1
    ni = ci.pow(2).sum(0).clamp_min(eps).sqrt()
    nj = cj.pow(2).sum(0).clamp_min(eps).sqrt()
    return cov / (ni[:, None] * nj[None, :])  # MT-CRL Eq. 1


def module_correlations(modules: Tensor, eps: float = 1e-8) -> Tensor:
    """``(K, K)`` matrix of ``||rho(Z_i, Z_j)||_F^2`` for the stacked module outputs ``modules`` (B, K, D)."""
    if modules.dim() != 3:
        raise ValueError(
            f"module outputs must be (B, K, D) -- K modules of D dims -- got {tuple(modules.shape)}"
        )
    b, k, d = modules.shape
    z = modules.reshape(b, k * d)
    c = z - z.mean(0, keepdim=True)
    c = c / c.pow(2).sum(0, keepdim=True).clamp_min(eps).sqrt()
    rho = (c.T @ c).view(k, d, k, d)  # all Pearson correlations at once, MT-CRL Eq. 1
    return rho.pow(2).sum(dim=(1, 3))


def decorrelation_loss(
    modules: Tensor, eps: float = 1e-8, reduction: str = "sum", subtract_floor: bool = False
) -> Tensor:
    """The decorrelation between the K modules of ``modules`` (B, K, D) (MT-CRL Eq. 2, without lambda_decor).

    * ``reduction="sum"``: ``sum_{i<j} ||rho(Phi_i(X), Phi_j(X))||_F^2``, MT-CRL Eq. 2 as printed;
    * ``reduction="mean"``: the same divided by the number of terms, K(K-1)/2 pairs x D^2 entries, so
      it lies in [0, 1] whatever K and D.

    Zero when every pair of modules is uncorrelated in the batch. ``subtract_floor`` subtracts the
    sampling floor of independent modules, E[rho^2] = 1/(B-1) per entry (a constant: it changes the
    value, not the gradient), so that 0 means "as uncorrelated as independent modules at this batch
    size"; a value may then be slightly negative. One module (K = 1) has no pairs: 0.
    """
    if reduction not in DECOR_REDUCTIONS:
        raise ValueError(f"decorrelation reduction must be one of {DECOR_REDUCTIONS}, got {reduction!r}")
    m = module_correlations(modules, eps)
    b, k, d = modules.shape
    terms = k * (k - 1) // 2 * d * d
    total = torch.triu(m, diagonal=1).sum()  # MT-CRL Eq. 2
    if subtract_floor and b > 1:
        total = total - terms / (b - 1)
    if reduction == "mean":
        total = total / max(terms, 1)
    return total


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
    return lambda_sps * routing.abs().sum() - lambda_bal * routing_entropy(routing)  # MT-CRL Eq. 3


def girm_penalty(env_grads: Tensor, form: str = "var") -> Tensor:
    """The G-IRM penalty from the routing gradients ``env_grads[e, t] = grad_{A_t} R_t^e`` (E, T, K).

    * ``form="norm"`` (MT-CRL Eq. 8): ``sum_t sum_e ||g_t^e||^2``;
    * ``form="var"`` (MT-CRL Eq. 9): ``sum_t sum_e (1/|E|) ||g_t^e - mean_e g_t^e||^2``, zero whenever the
      environments agree.
    """
    if env_grads.dim() != 3:
        raise ValueError(f"env_grads must be (E, T, K), got {tuple(env_grads.shape)}")
    if form == "norm":
        return env_grads.pow(2).sum()  # MT-CRL Eq. 8
    if form == "var":
        dev = env_grads - env_grads.mean(0, keepdim=True)
        return dev.pow(2).sum() / env_grads.shape[0]  # MT-CRL Eq. 9
    raise ValueError(f"G-IRM form must be one of {GIRM_FORMS}, got {form!r}")


def find_routing(params: Sequence[Tensor], who: str = "mtcrl") -> Tensor:
    """The routing parameter (A = sigmoid(routing_scale * param)) among ``params``: the tensor the MT-CRL model
    flags with ``ROUTING_FLAG``. An error names what to do when the model has none."""
    found = [p for p in params if getattr(p, ROUTING_FLAG, False)]
    if len(found) != 1:
        raise ValueError(
            f"{who} needs exactly one task-to-module routing parameter (an MT-CRL model, "
            f"coremtl_lite.models.mtcrl_model.MTCRLModel); found {len(found)} among "
            f"{len(params)} parameters"
        )
    return found[0]


def _norm(grads: Sequence[Tensor | None]) -> Tensor | float:
    """The joint L2 norm of ``grads`` (a 0-d tensor; 0.0 when every entry is None)."""
    sq = [g.detach().float().pow(2).sum() for g in grads if g is not None]
    return torch.stack(sq).sum().sqrt() if sq else 0.0


# ------------------------------------------------------------------------------------- the method
@register("mtcrl")
class MTCRL(EnvironmentPenaltyMethod):
    """MT-CRL's regularised objective (MT-CRL Eq. 4 + MT-CRL Eq. 7) for an :class:`MTCRLModel` (Algorithm 1).

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

    ``grad_{A_t}`` is taken with respect to the model's output ``routing`` A itself when the
    held-out closure returns the outputs (``loss_fn(batch, return_outputs=True)``, as the trainer's
    does), else from the gradient on the routing parameter by the chain rule through
    ``A = sigmoid(s * phi)`` (:meth:`routing_gradients`; exact, but it loses precision where the
    sigmoid saturates). All tasks' rows come from one backward pass of ``sum_t R_t`` since R_t
    depends on row t of A only.

    **L_decor as a per-entry mean** (``decor_reduction="mean"``, the default; ``"sum"`` is MT-CRL Eq. 2 as
    printed). The paper tunes lambda_decor in [0, 20] and reports that large values "do not harm"
    (appendix H). As a plain sum over K(K-1)/2 x D^2 = 28 x 256 = 7,168 squared correlations (K = 8,
    D = 16), even independent modules score 7,168/(B-1) ~ 114 at B = 64 -- the sampling floor --
    so lambda_decor = 20 would weigh thousands against task losses of a few units. As a mean the term
    lies in [0, 1], and the paper's weights are on the scale the paper describes. ``decor_floor``
    (default True) subtracts the floor 1/(B-1) from the logged value (the gradient is unchanged).

    Defaults: the paper's tuned weights (appendix H): lambda_sps 0.2, lambda_bal 5, lambda_decor 20,
    lambda_G-IRM 5, variance form. The optimiser is the trainer's; MT-CRL's experiments use Adam with
    no gradient clipping (set ``optim.grad_clip=0``, as the spurious-correlation study does).

    :meth:`step_logs` (also returned by ``backward``) gives the last step's per-term values and the
    gradient-norm share of each term on the modules Phi (task, decor, G-IRM) and on the routing
    parameter (task, graph, G-IRM): which term drives what.
    """

    def __init__(
        self,
        task_names,
        lambda_decor: float = 20.0,
        lambda_sps: float = 0.2,
        lambda_bal: float = 5.0,
        lambda_girm: float = 5.0,
        girm_form: str = "var",
        anneal_steps: int = 0,
        decor_reduction: str = "mean",
        decor_floor: bool = True,
    ):
        super().__init__(task_names, penalty_weight=lambda_girm, anneal_steps=anneal_steps)
        if girm_form not in GIRM_FORMS:
            raise ValueError(f"mtcrl: girm_form must be one of {GIRM_FORMS}, got {girm_form!r}")
        if decor_reduction not in DECOR_REDUCTIONS:
            raise ValueError(
                f"mtcrl: decor_reduction must be one of {DECOR_REDUCTIONS}, got {decor_reduction!r}"
            )
        for name, value in (
            ("lambda_decor", lambda_decor),
            ("lambda_sps", lambda_sps),
            ("lambda_bal", lambda_bal),
        ):
            if value < 0:
                raise ValueError(f"mtcrl: {name} must be >= 0, got {value}")
        self.lambda_decor, self.lambda_sps, self.lambda_bal = (
            float(lambda_decor),
            float(lambda_sps),
            float(lambda_bal),
        )
        self.girm_form = girm_form
        self.decor_reduction, self.decor_floor = decor_reduction, bool(decor_floor)
        self._step_logs: dict[str, float] = {}

    def step_logs(self) -> dict[str, float]:
        return dict(self._step_logs)

    # lines 1-10 and 17-18 of Algorithm 1 (the task risks come from the trainer)
    def backward(self, losses, *, shared_params, features=None, extra_loss=None):
        if self._pending is None:
            raise RuntimeError(
                "mtcrl needs the trainer's held-out hook: call meta_step(loss_fn, train_batch, "
                "val_batch, params) before every backward (uses_validation_batch is True)"
            )
        if features is None or features.dim() != 3:
            shape = None if features is None else tuple(features.shape)
            raise ValueError(
                f"mtcrl needs features = the stacked module outputs (B, K, D) of an MT-CRL model; got {shape}"
            )
        vec = self._ordered(losses)
        theta = find_routing(shared_params)
        routing = routing_of(theta)
        decor = decorrelation_loss(features, reduction=self.decor_reduction)  # MT-CRL Eq. 2
        graph = graph_loss(routing, self.lambda_sps, self.lambda_bal)  # MT-CRL Eq. 3
        task = vec.sum() if extra_loss is None else vec.sum() + extra_loss
        modules = [p for p in shared_params if p is not theta and p.requires_grad]
        # each regulariser's gradient separately, then the task losses' backward, all summed in .grad
        g_decor = (
            torch.autograd.grad(self.lambda_decor * decor, modules, retain_graph=True, allow_unused=True)
            if self.lambda_decor > 0 and decor.requires_grad
            else [None] * len(modules)
        )
        (g_graph,) = torch.autograd.grad(graph, [theta], retain_graph=True, allow_unused=True)
        shared = [*modules, theta]
        before = [None if p.grad is None else p.grad.detach().clone() for p in shared]
        task.backward()  # everything the task losses reach, the per-task predictors f_t included
        g_task = [
            None if p.grad is None else (p.grad.detach() if b is None else p.grad.detach() - b)
            for p, b in zip(shared, before)
        ]
        with torch.no_grad():
            for p, g in [*zip(modules, g_decor), (theta, g_graph)]:
                if g is not None:
                    p.grad = g.clone() if p.grad is None else p.grad.add_(g)
        pending = {id(p): g for p, g in self._pending}
        self._add_pending()
        self.step_count += 1
        a = routing.detach()
        floor = 0.0
        if self.decor_floor and features.shape[0] > 1 and features.shape[1] > 1:
            floor = 1.0 / (features.shape[0] - 1)
            if self.decor_reduction == "sum":
                k, d = features.shape[1], features.shape[2]
                floor *= k * (k - 1) // 2 * d * d
        values = {
            "mtcrl/task": vec.detach().sum(),
            "mtcrl/decor": decor.detach(),
            "mtcrl/graph": graph.detach(),
            "mtcrl/sparsity": a.sum(),
            "mtcrl/entropy": routing_entropy(a),
            "mtcrl/A_mean": a.mean(),
            "mtcrl/A_min": a.min(),
            "mtcrl/A_max": a.max(),
            "mtcrl/A_off": (a < 0.1).float().mean(),
        }
        n = len(modules)
        norms = {
            "modules": {
                "task": _norm(g_task[:n]),
                "decor": _norm(g_decor),
                "girm": _norm([pending.get(id(p)) for p in modules]),
            },
            "routing": {
                "task": _norm(g_task[n:]),
                "graph": _norm([g_graph]),
                "girm": _norm([pending.get(id(theta))]),
            },
        }
        gnorm = {f"{where}/{term}": v for where, terms in norms.items() for term, v in terms.items()}
        read = as_floats({**values, **gnorm})  # one read-back from the device for every value
        logs = {k: read[k] for k in values}
        logs["mtcrl/decor"] -= floor
        logs.update(self._pending_logs)
        for where, terms in norms.items():
            total = sum(read[f"{where}/{term}"] for term in terms)
            for term in terms:
                value = read[f"{where}/{term}"]
                logs[f"mtcrl/gnorm_{where}/{term}"] = value
                logs[f"mtcrl/share_{where}/{term}"] = value / total if total > 0 else 0.0
        self._step_logs = logs
        return dict(logs)

    def _add_pending(self) -> None:
        with torch.no_grad():
            for p, g in self._pending or ():
                p.grad = g.to(p.dtype).clone() if p.grad is None else p.grad.add_(g.to(p.grad.dtype))
        self._pending = None

    def routing_gradients(self, losses: Tensor, theta: Tensor, create_graph: bool = True) -> Tensor:
        """``(T, K)``: row t is ``grad_{A_t} R_t`` for the ordered task losses (see the class docstring)."""
        (g_theta,) = torch.autograd.grad(losses.sum(), theta, create_graph=create_graph)
        a = routing_of(theta)
        scale = getattr(theta, ROUTING_SCALE, 1.0)
        return g_theta / (scale * a * (1 - a)).clamp_min(1e-12)  # dR/dA = dR/dphi / (s sigmoid'(s phi))

    # lines 11-17 of Algorithm 1
    def penalty_grads(self, loss_fn, train_batch, val_batch, params):
        theta = find_routing(params)
        env_grads, predictors = [], set()
        for batch in (train_batch, val_batch):  # e in {train, valid} (line 14)
            try:
                task_losses, outputs = loss_fn(batch, return_outputs=True)
            except TypeError:  # a closure without return_outputs: go through the routing parameter
                task_losses, outputs = loss_fn(batch), {}
            losses = self.task_losses(task_losses)
            predictors = set().union(*self.predictors(losses, params))
            routing = outputs.get("routing") if isinstance(outputs, dict) else None
            if isinstance(routing, Tensor) and routing.requires_grad:  # d R / d A directly (no saturation)
                (g,) = torch.autograd.grad(torch.stack(losses).sum(), routing, create_graph=True)
            else:
                g = self.routing_gradients(torch.stack(losses), theta)
            env_grads.append(g)
        penalty = girm_penalty(
            torch.stack(env_grads), self.girm_form
        )  # MT-CRL Eq. 8 / MT-CRL Eq. 9 (line 15)
        logs = {"mtcrl/girm": float(penalty.detach())}
        weight = self.current_weight()
        if weight == 0.0:
            return [], logs
        targets = [p for p in params if id(p) not in predictors]  # f_t detached (line 11)
        grads = torch.autograd.grad(weight * penalty, targets, allow_unused=True)  # line 17
        return [(p, g) for p, g in zip(targets, grads) if g is not None], logs
