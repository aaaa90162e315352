"""MOML: Ye, Lin, Jiang, Chen, Zhang & Zhang, "Multi-Objective Meta Learning", NeurIPS 2021."""

from __future__ import annotations

import torch
from torch import Tensor

from coremtl_lite.methods._solvers import min_norm_simplex
from coremtl_lite.methods.base import Weighting, jacobian_of, register, unflatten_like


@register("moml")
class MOML(Weighting):
    """MOML for loss weighting (Ye et al. 2021, §3 and its MTL instance, §5): a bi-level problem

    * lower level: ``theta*(lam) = argmin_theta sum_t lam_t L_t^train(theta)``;
    * upper level, multi-objective: ``min_lam (L_1^val(theta*(lam)), ..., L_T^val(theta*(lam)))``,

    solved by gradient-based MOO on ``lam`` (MGDA on the per-task hypergradients), with
    ``lam = T softmax(logits)`` so the weights stay positive and sum to T (EW at the start).

    :meth:`meta_step` (the generic held-out hook, see ``methods/base.py``) approximates
    ``theta*(lam)`` by one SGD look-ahead step ``theta' = theta - inner_lr sum_t lam_t g_t`` (the
    usual unrolled approximation) and differentiates to first order, dropping Hessian terms:
    ``dL_s^val(theta')/dlam_t = -inner_lr <grad L_s^val(theta'), g_t>``. The T x T hypergradient is
    chained through the softmax, combined by the min-norm (MGDA) rule, normalised to unit length
    (our choice, for a learning rate that does not depend on the loss scale) and applied as
    ``logits -= meta_lr * d``. The model's parameters and ``.grad`` are restored exactly.
    :meth:`backward` is then a weighted sum with the current ``lam``. Cost per step: two extra
    forward passes and 2T backward passes over ``params``.
    """

    # registered buffers (typed here; nn.Module would type them Tensor | Module)
    logits: Tensor

    uses_validation_batch = True

    def __init__(self, task_names, inner_lr: float = 0.1, meta_lr: float = 0.1):
        super().__init__(task_names)
        if inner_lr <= 0 or meta_lr <= 0:
            raise ValueError(f"moml: inner_lr and meta_lr must be > 0, got {inner_lr}, {meta_lr}")
        self.inner_lr, self.meta_lr = float(inner_lr), float(meta_lr)
        self.register_buffer("logits", torch.zeros(self.num_tasks))

    def weights(self, losses: Tensor) -> Tensor:
        return (self.num_tasks * torch.softmax(self.logits, dim=0)).to(losses)

    def meta_step(self, loss_fn, train_batch, val_batch, params):
        params = [p for p in params if p.requires_grad]
        if not params:
            raise ValueError("moml.meta_step: params holds no trainable tensor")
        with torch.enable_grad():
            j_train = jacobian_of(self._ordered(loss_fn(train_batch)), params)  # rows g_t at theta
            lam = self.weights(j_train[:, 0]).to(j_train)
            step = lam @ j_train
            saved = [p.detach().clone() for p in params]
            try:
                with torch.no_grad():  # look-ahead theta' = theta - inner_lr * grad(sum_t lam_t L_t)
                    for p, s in zip(params, unflatten_like(step, params)):
                        p.sub_(self.inner_lr * s)
                val_losses = self._ordered(loss_fn(val_batch))
                j_val = jacobian_of(val_losses, params)
            finally:
                with torch.no_grad():
                    for p, s in zip(params, saved):
                        p.copy_(s)
        hyper = -self.inner_lr * (j_val.double() @ j_train.double().T)  # d L_s^val / d lam_t
        p_soft = torch.softmax(self.logits.double(), dim=0)
        dlam = self.num_tasks * (torch.diag(p_soft) - torch.outer(p_soft, p_soft))  # d lam / d logits
        hyper = hyper @ dlam  # rows: d L_s^val / d logits
        a = torch.from_numpy(min_norm_simplex((hyper @ hyper.T).numpy()))  # MGDA on the upper level
        d = a @ hyper
        norm = float(d.norm())
        if norm > 1e-12:
            self.logits -= (self.meta_lr * d / norm).to(self.logits)
        logs = {f"val_loss/{t}": float(val_losses[i].detach()) for i, t in enumerate(self.task_names)}
        logs["moml/hypergrad_norm"] = norm
        return logs
