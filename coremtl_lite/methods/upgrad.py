"""UPGrad: Quinton & Rey, "Jacobian Descent for Multi-Objective Optimization", 2024."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from coremtl_lite.methods._solvers import dual_cone_weights, gramian
from coremtl_lite.methods._weighted import WeightedAggregator
from coremtl_lite.methods.base import register


@register("upgrad")
class UPGrad(WeightedAggregator):
    """UPGrad (Quinton & Rey 2024, UPGrad Eq. 3-5): project every task gradient onto the dual cone of
    all of them, ``{x : J x >= 0}``, and average the projections.

    By their Prop. 1 the projection of ``J^T u`` is ``J^T w`` with ``w = argmin_{v >= u} v^T G v``,
    a T-dimensional QP solved with quadprog (``_solvers.dual_cone_weights``; the Gramian is trace-
    normalised and regularised by ``reg_eps * I`` like torchjd's default projector). With
    ``u = e_i / T`` for each task i (``preference`` changes the 1/T), the weights are the sum of the
    T solutions. The result never conflicts with any task gradient (non-conflicting), and equals
    the plain mean when no gradients conflict. Matches torchjd's UPGrad (tested).
    """

    def __init__(
        self,
        task_names,
        on_features: bool = False,
        preference: Sequence[float] | None = None,
        reg_eps: float = 1e-4,
    ):
        super().__init__(task_names, on_features=on_features)
        pref = (
            np.full(self.num_tasks, 1.0 / self.num_tasks)
            if preference is None
            else np.asarray(preference, dtype=np.float64)
        )
        if pref.shape != (self.num_tasks,):
            raise ValueError(f"upgrad: preference needs {self.num_tasks} entries, got shape {pref.shape}")
        self.preference, self.reg_eps = pref, float(reg_eps)

    def weights(self, jacobian: Tensor) -> Tensor:
        g = gramian(jacobian)
        w = sum(
            dual_cone_weights(g, np.eye(len(g))[i] * self.preference[i], self.reg_eps)  # UPGrad Eq. 5
            for i in range(len(g))
        )
        return torch.from_numpy(np.asarray(w, dtype=np.float64))
