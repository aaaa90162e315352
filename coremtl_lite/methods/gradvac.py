"""GradVac: Wang, Tsvetkov, Firat & Cao, "Gradient Vaccine", ICLR 2021."""

from __future__ import annotations

import torch
from torch import Tensor

from coremtl_lite.methods._solvers import gramian
from coremtl_lite.methods._weighted import WeightedAggregator
from coremtl_lite.methods.base import register


@register("gradvac")
class GradVac(WeightedAggregator):
    """Gradient Vaccine (Wang et al. 2021, §3.3, Algorithm 1): like PCGrad, but instead of only
    removing conflicts it raises the cosine ``phi_ij`` of each pair towards an adaptive target
    ``phi^_ij`` (an EMA of the observed cosines, decay ``beta``). For task i and each other task j
    in random order, if ``phi_ij < phi^_ij``::

        g_i <- g_i + ||g_i|| (phi^ sqrt(1-phi^2) - phi sqrt(1-phi^^2)) / (||g_j|| sqrt(1-phi^^2)) g_j

    which sets the cosine of (g_i, g_j) to ``phi^``; then ``phi^_ij <- (1-beta) phi^_ij + beta phi_ij``.
    The update is ``sum_i g_i``. Targets start at 0 (so the first steps act like PCGrad) and live
    in a buffer (``state_dict()``); orders come from a seeded generator as in :class:`PCGrad`.
    Whole-model granularity (the paper also applies it per layer). ``beta`` = 0.5 as in LibMTL and
    torchjd, whose GradVac this matches exactly for the same random orders (tested).
    """

    # registered buffers (typed here; nn.Module would type them Tensor | Module)
    phi_hat: Tensor

    def __init__(
        self, task_names, on_features: bool = False, beta: float = 0.5, eps: float = 1e-8, seed: int = 0
    ):
        super().__init__(task_names, on_features=on_features)
        if not 0.0 <= beta <= 1.0:
            raise ValueError(f"gradvac: beta must be in [0, 1], got {beta}")
        self.beta, self.eps, self.seed = float(beta), float(eps), int(seed)
        self.generator = torch.Generator().manual_seed(self.seed)
        self.register_buffer("phi_hat", torch.zeros(self.num_tasks, self.num_tasks, dtype=torch.float64))

    def weights(self, jacobian: Tensor) -> Tensor:
        g = torch.from_numpy(gramian(jacobian))
        t = g.shape[0]
        phi_hat = self.phi_hat
        c = torch.eye(t, dtype=torch.float64)  # g_i^new = sum_k c_ik g_k
        for i in range(t):
            cg = c[i] @ g  # <g_i^new, g_k> for every k
            others = [j for j in range(t) if j != i]
            for idx in torch.randperm(len(others), generator=self.generator).tolist():
                j = others[idx]
                norm_i = (cg @ c[i]).clamp_min(0.0).sqrt()
                norm_j = g[j, j].clamp_min(0.0).sqrt()
                phi = cg[j] / (norm_i * norm_j + self.eps)
                target = phi_hat[i, j]
                if phi < target:  # §3.3: vaccinate towards the target cosine
                    s_phi = (1.0 - phi * phi).clamp_min(0.0).sqrt()
                    s_tgt = (1.0 - target * target).clamp_min(0.0).sqrt()
                    w = norm_i * (target * s_phi - phi * s_tgt) / (norm_j * s_tgt + self.eps)
                    c[i, j] += w
                    cg = cg + w * g[j]
                phi_hat[i, j] = (1.0 - self.beta) * target + self.beta * phi  # EMA of the cosine
        return c.sum(dim=0)

    def get_extra_state(self) -> dict:
        return {"generator": self.generator.get_state()}

    def set_extra_state(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
