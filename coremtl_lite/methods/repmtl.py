"""Rep-MTL: Wang, Li & Xu, "Rep-MTL: Unleashing the Power of Representation-level Task Saliency
for Multi-Task Learning", ICCV 2025."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from coremtl_lite.methods.base import Weighting, register


@register("repmtl")
class RepMTL(Weighting):
    """Rep-MTL (Wang et al. 2025, §3): equal weighting plus two regularisers on the
    *representation-level task saliency* ``S_t = dL_t / dZ`` (the gradient of each task loss with
    respect to the shared representation ``Z``, the ``features`` the trainer passes):

    * TSR, task-specific saliency regulation (entropy-based penalisation): at every element of
      ``Z`` the tasks' saliency magnitudes (each divided by its batch mean, so tasks of different
      loss scales compare) give a distribution over tasks ``P_t = softmax_t(|S~_t| / tau_tsr)``; its
      entropy, divided by ``log T`` and averaged over elements, is penalised so that elements keep a
      dominant task instead of blurred, shared-by-all saliency;
    * CSA, cross-task saliency alignment (sample-wise, contrastive): each sample's saliency is
      pooled over space into a vector per task; for every ordered task pair, an InfoNCE loss with
      temperature ``tau_csa`` makes a sample's saliency under task t closest to the same sample's
      under task k among the batch, promoting complementary sharing.

    Total: ``sum_t L_t + lambda_tsr TSR + lambda_csa CSA (+ extra_loss)``. The saliencies are built
    with ``create_graph=True``, so the regularisers train the encoder and heads through a double
    backward. No official code is public; this follows the paper's description (equation-level
    details such as the normalisations and temperatures are this package's choices; defaults
    ``lambda_tsr = lambda_csa = 0.1``, ``tau_tsr = 1``, ``tau_csa = 0.5``).
    """

    def __init__(
        self,
        task_names,
        lambda_tsr: float = 0.1,
        lambda_csa: float = 0.1,
        tau_tsr: float = 1.0,
        tau_csa: float = 0.5,
    ):
        super().__init__(task_names)
        if min(lambda_tsr, lambda_csa) < 0 or min(tau_tsr, tau_csa) <= 0:
            raise ValueError("repmtl: lambdas must be >= 0 and temperatures > 0")
        self.lambda_tsr, self.lambda_csa = float(lambda_tsr), float(lambda_csa)
        self.tau_tsr, self.tau_csa = float(tau_tsr), float(tau_csa)

    def weights(self, losses: Tensor) -> Tensor:
        return torch.ones_like(losses)

    def saliency(self, losses: Tensor, features: Tensor) -> Tensor:
        """``(T, B, ...)`` task saliencies ``dL_t/dZ`` with a graph for the regularisers."""
        rows = []
        for loss in losses:
            (g,) = torch.autograd.grad(
                loss, features, retain_graph=True, create_graph=True, allow_unused=True
            )
            rows.append(torch.zeros_like(features) if g is None else g)
        return torch.stack(rows)

    def tsr_loss(self, sal: Tensor) -> Tensor:
        """Entropy of the per-element task distribution of saliency magnitudes, in [0, 1]."""
        t = sal.shape[0]
        if t < 2:
            return sal.new_zeros(())
        mag = sal.abs().flatten(1)  # (T, B * elements)
        mag = mag / (mag.mean(dim=1, keepdim=True) + 1e-12)
        logp = torch.log_softmax(mag / self.tau_tsr, dim=0)
        entropy = -(logp.exp() * logp).sum(dim=0)
        return entropy.mean() / math.log(t)

    def csa_loss(self, sal: Tensor) -> Tensor:
        """Mean InfoNCE over ordered task pairs; positives: the same sample under both tasks."""
        t, b = sal.shape[:2]
        if t < 2 or b < 2:
            return sal.new_zeros(())
        vec = sal.flatten(3).mean(dim=3) if sal.dim() > 3 else sal  # (T, B, C): pooled over space
        vec = F.normalize(vec.flatten(2), dim=2)
        target = torch.arange(b, device=sal.device)
        terms = [
            F.cross_entropy(vec[i] @ vec[k].T / self.tau_csa, target)
            for i in range(t)
            for k in range(t)
            if i != k
        ]
        return torch.stack(terms).mean()

    def backward(self, losses, *, shared_params, features=None, extra_loss=None):
        if features is None:
            raise ValueError("repmtl needs the model's shared features (the trainer's features=...)")
        vec = self._ordered(losses)
        sal = self.saliency(vec, features)
        tsr, csa = self.tsr_loss(sal), self.csa_loss(sal)
        total = vec.sum() + self.lambda_tsr * tsr + self.lambda_csa * csa
        if extra_loss is not None:
            total = total + extra_loss
        total.backward()
        return {"repmtl/tsr": float(tsr.detach()), "repmtl/csa": float(csa.detach())}
