"""GradNorm: Chen, Badrinarayanan, Lee & Rabinovich, ICML 2018."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from coremtl_lite.methods.base import Weighting, register


@register("gradnorm")
class GradNorm(Weighting):
    """GradNorm (Chen et al. 2018, §3, GradNorm Eq. 1-2): learn task weights ``w_i`` whose weighted gradient
    norms on the last shared layer ``W`` follow each task's relative training rate.

    Per step, with ``G_i = ||grad_W w_i L_i||`` (GradNorm Eq. 1), ``G_bar = mean_i G_i``, the inverse training
    rate ``r_i = L~_i / mean_j L~_j`` where ``L~_i = L_i(t) / L_i(0)``:

    * the model gets the gradient of ``sum_i w_i L_i (+ extra_loss)`` with ``w`` held fixed;
    * ``w`` gets the gradient of ``L_grad = sum_i |G_i - G_bar r_i^alpha|`` (GradNorm Eq. 2), the target
      treated as a constant (§3.2). It is written into ``w.grad``; the trainer's optimiser (which
      receives ``method.parameters()``) applies it with the model's learning rate.
    * ``w`` is renormalised so that ``sum_i w_i = T`` (§3.2). The paper does this after each update;
      here it happens at the start of the next :meth:`backward`, which is the same sequence of
      weights actually used (the trainer has no post-step hook).

    ``W`` is the last matrix-shaped tensor of ``shared_params`` that the task losses reach (the trainer
    passes ``model.shared_parameters()`` in module order, so this is the last shared layer's weight);
    ``layer`` picks another matrix by index. Since ``G_i = w_i ||grad_W L_i||``, only the norms of the
    per-task gradients on ``W`` are needed (T extra backward passes, no double backward).
    ``L_i(0)`` is recorded at the first call and kept in a buffer. ``alpha`` = 1.5 (LibMTL's default;
    the paper tunes it per dataset).
    """

    # registered buffers (typed here; nn.Module would type them Tensor | Module)
    initial_losses: Tensor
    has_initial: Tensor

    def __init__(self, task_names, alpha: float = 1.5, layer: int = -1):
        super().__init__(task_names)
        self.alpha = float(alpha)
        self.layer = int(layer)
        self.loss_scale = nn.Parameter(torch.ones(self.num_tasks))
        self.register_buffer("initial_losses", torch.zeros(self.num_tasks))
        self.register_buffer("has_initial", torch.zeros((), dtype=torch.bool))
        self._reached: set[int] | None = None  # ids of the shared matrices the task losses reach

    def weights(self, losses: Tensor) -> Tensor:
        return self.loss_scale.detach().to(losses)

    def _layer(self, shared_params, total: Tensor) -> Tensor:
        """W: the ``layer``-th matrix of ``shared_params`` that the task losses ``total`` reach (a
        dual-stream model's residual stream and decoder are shared but no task loss reaches them)."""
        mats = [p for p in shared_params if p.requires_grad and p.dim() >= 2]
        if self._reached is None and mats and total.requires_grad:  # found once, as IRM's predictors
            grads = torch.autograd.grad(total, mats, retain_graph=True, allow_unused=True)
            self._reached = {id(p) for p, g in zip(mats, grads) if g is not None}
        if self._reached is not None:
            mats = [p for p in mats if id(p) in self._reached]
        if not mats:
            raise ValueError(
                "gradnorm needs at least one matrix-shaped shared parameter that the task losses reach "
                "(the last shared layer's weight); shared_params has none"
            )
        return mats[self.layer]

    def backward(self, losses, *, shared_params, features=None, extra_loss=None):
        vec = self._ordered(losses)
        with torch.no_grad():  # §3.2: renormalise so that sum_i w_i = T
            self.loss_scale.clamp_(min=1e-6)
            self.loss_scale.mul_(self.num_tasks / self.loss_scale.sum())
            if not bool(self.has_initial):
                self.initial_losses.copy_(vec.detach())
                self.has_initial.fill_(True)
        w_layer = self._layer(list(shared_params), vec.sum())
        norms = torch.stack(
            [
                torch.autograd.grad(vec[i], w_layer, retain_graph=True, allow_unused=True)[0].norm()
                if vec[i].requires_grad
                else vec.new_zeros(())
                for i in range(self.num_tasks)
            ]
        ).detach()
        g = self.loss_scale * norms  # GradNorm Eq. 1: G_W^(i) = ||grad_W w_i L_i||
        ratio = vec.detach() / self.initial_losses.clamp_min(1e-12)  # L~_i
        r = ratio / ratio.mean()  # inverse training rate r_i
        target = (g.mean() * r**self.alpha).detach()  # constant target (§3.2)
        l_grad = (g - target).abs().sum()  # GradNorm Eq. 2
        (gw,) = torch.autograd.grad(l_grad, self.loss_scale)
        self.loss_scale.grad = gw if self.loss_scale.grad is None else self.loss_scale.grad + gw
        w = self.loss_scale.detach()
        total = (w * vec).sum()
        if extra_loss is not None:
            total = total + extra_loss
        total.backward()
        logs = self._weight_logs(w)
        logs["gradnorm/loss"] = float(l_grad.detach())
        return logs
