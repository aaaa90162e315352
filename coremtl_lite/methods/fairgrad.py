"""FairGrad: Ban & Ji, "Fair Resource Allocation in Multi-Task Learning", ICML 2024."""

from __future__ import annotations

import torch
from torch import Tensor

from coremtl_lite.methods._solvers import fair_weights, gramian
from coremtl_lite.methods._weighted import WeightedAggregator
from coremtl_lite.methods.base import register


@register("fairgrad")
class FairGrad(WeightedAggregator):
    """FairGrad (Ban & Ji 2024, FairGrad Eq. 4, Algorithm 1): alpha-fair allocation of the update's benefit.

    The update is ``d = J^T w`` where ``w > 0`` solves ``G w = w^(-1/alpha)`` elementwise: every
    task's improvement rate ``<g_t, d>`` is ``w_t^(-1/alpha)``. alpha -> 0 tends to the sum, alpha = 1
    is proportional fairness (the Nash-MTL weights), alpha -> inf max-min fairness. The paper and
    torchjd solve the equation with ``scipy.optimize.least_squares``; here it is solved as the
    stationary point of a strictly convex function by damped Newton (``_solvers.fair_weights``),
    which reaches the same solution to high precision (tested against scipy), with no ridge. An
    all-zero Jacobian gives a zero step (any weights give d = 0), as does a Pareto-stationary one;
    a task with a zero gradient gets weight 0 (see ``fair_weights``). ``alpha`` defaults to 2.0 (a choice
    of this package; the paper tunes alpha per benchmark).
    """

    def __init__(self, task_names, on_features: bool = False, alpha: float = 2.0):
        super().__init__(task_names, on_features=on_features)
        if alpha <= 0:
            raise ValueError(f"fairgrad: alpha must be > 0, got {alpha}")
        self.alpha = float(alpha)

    def weights(self, jacobian: Tensor) -> Tensor:
        return torch.from_numpy(fair_weights(gramian(jacobian), self.alpha))  # FairGrad Eq. 4
