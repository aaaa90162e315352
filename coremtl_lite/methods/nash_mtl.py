"""Nash-MTL: Navon, Shamsian, Achituve, Maron, Kawaguchi, Chechik & Fetaya,
"Multi-Task Learning as a Bargaining Game", ICML 2022."""

from __future__ import annotations

import torch
from torch import Tensor

from coremtl_lite.methods._solvers import fair_weights, gramian
from coremtl_lite.methods._weighted import WeightedAggregator
from coremtl_lite.methods.base import register


@register("nash_mtl")
class NashMTL(WeightedAggregator):
    """Nash-MTL (Navon et al. 2022, Theorem 3.1, Nash-MTL Eq. 2): the Nash bargaining solution
    ``d = J^T a`` where ``a > 0`` solves ``G a = 1 / a`` elementwise (``G = J J^T``).

    Solver: ``a`` is the unique minimiser of the strictly convex ``1/2 a^T G a - sum_t log a_t``
    (its gradient is ``G a - 1/a``), found by damped Newton in float64 on the cosine matrix of the
    gradients, without a ridge (``_solvers.fair_weights`` with alpha = 1; tested against scipy on
    Jacobians whose gradient norms span four orders of magnitude). Degenerate Jacobians: a task with
    a zero gradient gets weight 0; if no direction improves every task (Pareto-stationary, e.g.
    opposite gradients) the bargaining problem has no solution and the step is zero. The paper's Algorithm 1 instead runs a few sequential convex (CCP) steps with
    cvxpy; both target the same fixed point, which the tests check against torchjd's port of the
    official code. The solution has ``||d||^2 = a^T G a = T``. As in the official code (and
    torchjd), the update is then clipped to norm ``max_norm`` (default 1; 0 disables), and
    ``update_weights_every`` > 1 reuses the last weights for that many steps (state in buffers).
    """

    # registered buffers (typed here; nn.Module would type them Tensor | Module)
    alpha: Tensor
    step: Tensor

    def __init__(
        self, task_names, on_features: bool = False, max_norm: float = 1.0, update_weights_every: int = 1
    ):
        super().__init__(task_names, on_features=on_features)
        if max_norm < 0 or update_weights_every < 1:
            raise ValueError(
                f"nash_mtl: need max_norm >= 0 and update_weights_every >= 1, got "
                f"{max_norm}, {update_weights_every}"
            )
        self.max_norm, self.update_weights_every = float(max_norm), int(update_weights_every)
        self.register_buffer("alpha", torch.ones(self.num_tasks, dtype=torch.float64))
        self.register_buffer("step", torch.zeros((), dtype=torch.long))

    def weights(self, jacobian: Tensor) -> Tensor:
        g = gramian(jacobian)
        if int(self.step) % self.update_weights_every == 0:
            self.alpha.copy_(torch.from_numpy(fair_weights(g, alpha=1.0)))  # Nash-MTL Eq. 2: G a = 1/a
        self.step += 1
        a = self.alpha.clone()
        if self.max_norm > 0:
            norm = max(float(a @ torch.from_numpy(g) @ a), 0.0) ** 0.5  # ||J^T a|| (rounding can give -0)
            if norm > self.max_norm:
                a = a * (self.max_norm / norm)
        return a
