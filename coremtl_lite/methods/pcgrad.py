"""PCGrad: Yu, Kumar, Gupta, Levine, Hausman & Finn, "Gradient Surgery for Multi-Task Learning", NeurIPS 2020."""

from __future__ import annotations

import torch
from torch import Tensor

from coremtl_lite.methods._solvers import gramian
from coremtl_lite.methods._weighted import WeightedAggregator
from coremtl_lite.methods.base import register


@register("pcgrad")
class PCGrad(WeightedAggregator):
    """PCGrad (Yu et al. 2020, Algorithm 1, PCGrad Eq. 1): for each task i, visit the other tasks j in a
    random order; whenever ``<g_i^PC, g_j> < 0`` project the conflicting component out,
    ``g_i^PC <- g_i^PC - <g_i^PC, g_j> / ||g_j||^2 g_j``; the update is ``sum_i g_i^PC``.

    Computed on the Gramian: ``g_i^PC = sum_k c_ik g_k`` and ``<g_i^PC, g_j> = (c_i G)_j``, so the
    T x T coefficients are updated instead of P-dimensional vectors (same result, cost independent
    of the model size after the one product ``G = J J^T``). The visiting orders are drawn with
    ``torch.randperm(T)`` per task from a generator seeded at construction (state in
    ``state_dict()``); this is the same sequence of draws as torchjd's PCGrad with the global RNG
    seeded identically, which the tests use for an exact cross-check. Guarantee: for T = 2 the
    output never conflicts with either gradient; for T > 2 it can (see the tests).
    """

    def __init__(self, task_names, on_features: bool = False, seed: int = 0):
        super().__init__(task_names, on_features=on_features)
        self.seed = int(seed)
        self.generator = torch.Generator().manual_seed(self.seed)

    def weights(self, jacobian: Tensor) -> Tensor:
        g = torch.from_numpy(gramian(jacobian))
        t = g.shape[0]
        total = torch.zeros(t, dtype=torch.float64)
        for i in range(t):
            order = torch.randperm(t, generator=self.generator)
            c = torch.zeros(t, dtype=torch.float64)
            c[i] = 1.0
            for j in order.tolist():
                if j == i:
                    continue
                dot = c @ g[:, j]  # <g_i^PC, g_j>
                if dot < 0.0:
                    c[j] -= dot / g[j, j]  # PCGrad Eq. 1: remove the projection on g_j
            total += c
        return total

    def get_extra_state(self) -> dict:
        return {"generator": self.generator.get_state()}

    def set_extra_state(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
