"""MGDA and MGDA-UB: Sener & Koltun, "Multi-Task Learning as Multi-Objective Optimization", NeurIPS 2018."""

from __future__ import annotations

import torch
from torch import Tensor

from coremtl_lite.methods._solvers import gramian, min_norm_simplex
from coremtl_lite.methods._weighted import WeightedAggregator
from coremtl_lite.methods.base import register


@register("mgda")
class MGDA(WeightedAggregator):
    """MGDA (Sener & Koltun 2018, MGDA Eq. 3; Désidéri 2012): the min-norm point of the convex hull of
    the task gradients, ``d = sum_t a_t g_t`` with ``a = argmin_{a in simplex} ||sum_t a_t g_t||^2``.

    ``d`` is a common descent direction (``<d, g_t> >= ||d||^2`` for all t) and vanishes at a
    Pareto-stationary point. ``solver="quadprog"`` (default) solves this QP exactly;
    ``solver="frank_wolfe"`` is the paper's Algorithm 2 (``eps``, ``max_iters`` as in torchjd).
    ``normalize="l2"`` computes ``a`` on unit-norm gradients and applies it to the raw ones, like
    the paper's code (``"loss"``-type normalisations need the losses and are not offered).
    The weights sum to one, so ``d`` is on the scale of one task gradient (EW's is T times larger).
    """

    def __init__(
        self,
        task_names,
        on_features: bool = False,
        solver: str = "quadprog",
        normalize: str = "none",
        eps: float = 1e-3,
        max_iters: int = 100,
    ):
        super().__init__(task_names, on_features=on_features)
        if solver not in ("quadprog", "frank_wolfe"):
            raise ValueError(f"{self.name}: solver must be 'quadprog' or 'frank_wolfe', got {solver!r}")
        if normalize not in ("none", "l2"):
            raise ValueError(f"{self.name}: normalize must be 'none' or 'l2', got {normalize!r}")
        self.solver, self.normalize, self.eps, self.max_iters = solver, normalize, eps, max_iters

    def weights(self, jacobian: Tensor) -> Tensor:
        j = jacobian
        if self.normalize == "l2":
            j = j / j.norm(dim=1, keepdim=True).clamp_min(1e-12)
        a = min_norm_simplex(gramian(j), self.solver, self.eps, self.max_iters)  # MGDA Eq. 3
        return torch.from_numpy(a)


@register("mgda_ub")
class MGDAUB(MGDA):
    """MGDA-UB (Sener & Koltun 2018, §3.3, MGDA Eq. 8): MGDA on the Jacobian w.r.t. the shared
    representation Z instead of the shared parameters (an upper bound, one backward pass per task
    through the heads only). The min-norm direction on Z is back-propagated through the encoder,
    which gives the encoder exactly the gradient of ``sum_t a_t L_t``. (The paper's heads also get
    ``a_t``-weighted gradients; here, as for every aggregator, each head gets its own task's
    gradient.)"""

    def __init__(self, task_names, on_features: bool = True, **options):
        super().__init__(task_names, on_features=on_features, **options)
