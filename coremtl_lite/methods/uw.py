"""Uncertainty weighting (UW): Kendall, Gal & Cipolla, CVPR 2018."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from coremtl_lite.methods.base import Weighting, register


@register("uw")
class UncertaintyWeighting(Weighting):
    """Learned homoscedastic-uncertainty weights (Kendall et al. 2018, UW Eq. 7-10).

    Each task has a learnable log-variance ``s_t = log sigma_t^2`` (an ``nn.Parameter``, so
    ``method.parameters()`` hands it to the optimiser) and the objective is
    ``sum_t 1/2 exp(-s_t) L_t + 1/2 s_t``: the Gaussian-likelihood form of UW Eq. 7 written with
    ``s = log sigma^2`` as the paper advises for stability (§3.2). ``s`` starts at 0 (weight 1/2).
    This is exactly torchjd's ``scalarization.UW`` (tested); LibMTL drops the 1/2 factors and
    starts at ``s = -0.5`` instead.
    """

    def __init__(self, task_names, init_log_var: float = 0.0):
        super().__init__(task_names)
        self.log_var = nn.Parameter(torch.full((self.num_tasks,), float(init_log_var)))

    def weights(self, losses: Tensor) -> Tensor:
        return 0.5 * torch.exp(-self.log_var)  # UW Eq. 7: 1 / (2 sigma^2)

    def combine(self, losses: Tensor) -> Tensor:
        return (self.weights(losses) * losses).sum() + 0.5 * self.log_var.sum()  # UW Eq. 7: + log sigma
