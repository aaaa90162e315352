"""DANN: Ganin et al., "Domain-Adversarial Training of Neural Networks", JMLR 2016 -- an MT-CRL baseline.

A domain classifier D learns to tell the environments apart from the shared representation, while a
gradient-reversal layer (GRL) makes the encoder remove what tells them apart. As in MT-CRL's
comparison (§4), the environments are the step's training batch (e = 0) and the held-out batch
(e = 1) of the trainer's held-out hook.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from coremtl_lite.methods.base import register
from coremtl_lite.methods.irm import EnvironmentPenaltyMethod


class _GradReverse(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, coeff):
        ctx.coeff = coeff
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return -ctx.coeff * grad, None


def grad_reverse(x: Tensor, coeff: float = 1.0) -> Tensor:
    """Identity forward, gradient times ``-coeff`` backward (DANN's gradient-reversal layer, Ganin §3.2)."""
    return _GradReverse.apply(x, float(coeff))


def pool_features(features: Tensor) -> Tensor:
    """A (B, F) vector per sample: spatial maps (B, C, h, w) are averaged, module stacks (B, K, D) flattened."""
    if features.dim() == 4:
        return features.mean(dim=(2, 3))
    if features.dim() >= 2:
        return features.reshape(features.shape[0], -1)
    raise ValueError(f"dann: features must be at least (B, F), got {tuple(features.shape)}")


def outputs_of(loss_fn, batch: dict, who: str) -> tuple[dict, dict]:
    """``(task_losses, model_outputs)`` from the trainer's held-out closure ``loss_fn(batch, return_outputs=True)``."""
    try:
        res = loss_fn(batch, return_outputs=True)
    except TypeError as err:
        raise TypeError(
            f"{who} needs the held-out closure to accept return_outputs=True and return "
            "(task_losses, model_outputs) with model_outputs['features']"
        ) from err
    if not (isinstance(res, tuple) and len(res) == 2 and "features" in res[1]):
        raise TypeError(
            f"{who}: loss_fn(batch, return_outputs=True) must return (task_losses, outputs) with "
            f"outputs['features']; got {type(res).__name__}"
        )
    return res


@register("dann")
class DANN(EnvironmentPenaltyMethod):
    """Equal weighting + an adversarial environment classifier through gradient reversal (Ganin et al. 2016, DANN Eq. 9-10).

    Per step, with features z^e = pool(Phi(x^e)) of the two environments e in {train=0, valid=1}:

        L_dom = mean_e BCE(D(GRL_lambda(z^e)), e),

    D minimises L_dom; the encoder receives ``-lambda`` times its gradient (the GRL), i.e. it
    maximises the domain confusion. ``penalty_weight`` is lambda; ``anneal_steps`` keeps it at 0 at
    first. The domain classifier is a ``hidden``-unit MLP, built lazily at the first features it sees
    (its parameters are the method's :meth:`parameters`; the trainer's optimiser updates them).

    Needs ``loss_fn(batch, return_outputs=True) -> (task_losses, outputs)`` from the held-out hook.
    """

    def __init__(
        self, task_names, penalty_weight: float = 0.1, anneal_steps: int = 0, hidden: int = 64, seed: int = 0
    ):
        super().__init__(task_names, penalty_weight, anneal_steps)
        torch.manual_seed(seed)
        self.discriminator = nn.Sequential(nn.LazyLinear(hidden), nn.ReLU(), nn.Linear(hidden, 1))

    def penalty_grads(self, loss_fn, train_batch, val_batch, params):
        weight = self.current_weight()
        losses, feats = [], []
        for env, batch in enumerate((train_batch, val_batch)):
            _, outputs = outputs_of(loss_fn, batch, "dann")
            z = pool_features(outputs["features"])
            logit = self.discriminator(grad_reverse(z, weight)).squeeze(-1)
            target = torch.full_like(logit, float(env))
            losses.append(F.binary_cross_entropy_with_logits(logit, target))
            feats.append(logit.detach())
        dom = torch.stack(losses).mean()
        acc = torch.cat([(feats[0] < 0).float(), (feats[1] > 0).float()]).mean()
        logs = {"dann/domain_loss": float(dom.detach()), "dann/domain_acc": float(acc)}
        targets = [*params, *self.discriminator.parameters()]
        grads = torch.autograd.grad(dom, targets, allow_unused=True)
        return [(p, g) for p, g in zip(targets, grads) if g is not None], logs
