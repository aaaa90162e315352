"""ExcessMTL: He, Zhou, Zhao & Han, "Robust Multi-Task Learning with Excess Risks", ICML 2024."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from coremtl_lite.methods._weighted import WeightedAggregator
from coremtl_lite.methods.base import register


@register("excess_mtl")
class ExcessMTL(WeightedAggregator):
    """ExcessMTL (He et al. 2024, ExcessMTL Eq. 6-9, Algorithm 1): up-weight the tasks farthest from their
    own optimum, measured by the *excess* risk rather than the raw loss.

    Per step: accumulate squared gradients ``S_t += g_t^2`` (a diagonal AdaGrad-style Hessian
    estimate, ExcessMTL Eq. 7); estimate the excess risk ``E_t = g_t^T diag(sqrt(S_t + 1e-7))^(-1) g_t``
    (ExcessMTL Eq. 6); divide by the first step's ``E_t`` (scale processing, §3.2); take an exponentiated-
    gradient step on the simplex, ``w <- softmax(log w + eta E)`` (ExcessMTL Eq. 9; log-space for stability
    as in torchjd). The update is ``J^T w``. Weights start uniform at ``1/T`` and stay on the
    simplex as in the paper (the official code and LibMTL start at 1 and renormalise to sum T).
    ``n_warmup_steps`` > 0 keeps the weights uniform for that many steps and uses the mean excess
    risk over them as the baseline (App. C.1).

    State: ``S`` (T x P: as large as T copies of the shared gradient), the baseline and the
    weights. They are kept in ``_extra_state`` of ``state_dict()``; P is only known at the first
    call. Matches torchjd's ExcessMTL step by step (tested).
    """

    def __init__(
        self, task_names, on_features: bool = False, robust_step_size: float = 1.0, n_warmup_steps: int = 0
    ):
        super().__init__(task_names, on_features=on_features)
        if robust_step_size <= 0 or n_warmup_steps < 0:
            raise ValueError(
                f"excess_mtl: need robust_step_size > 0 and n_warmup_steps >= 0, got "
                f"{robust_step_size}, {n_warmup_steps}"
            )
        self.robust_step_size, self.n_warmup_steps = float(robust_step_size), int(n_warmup_steps)
        self._state: dict[str, Any] = {}

    def weights(self, jacobian: Tensor) -> Tensor:
        j = jacobian.detach().double()
        st = self._state
        if st.get("sq_grad_sum") is None or st["sq_grad_sum"].shape != j.shape:
            st.update(
                sq_grad_sum=torch.zeros_like(j),
                warmup_sum=j.new_zeros(len(j)),
                baseline=None,
                weights=j.new_full((len(j),), 1.0 / len(j)),
                steps=0,
            )
        sq = j**2
        st["sq_grad_sum"] += sq  # ExcessMTL Eq. 7
        excess = (sq / torch.sqrt(st["sq_grad_sum"] + 1e-7)).sum(dim=1)  # ExcessMTL Eq. 6
        if st["steps"] < self.n_warmup_steps:
            st["warmup_sum"] += excess
            st["steps"] += 1
            return st["weights"].cpu()
        st["steps"] += 1
        if st["baseline"] is None:
            if self.n_warmup_steps > 0:
                baseline = st["warmup_sum"] / self.n_warmup_steps
                st["baseline"] = baseline
                excess = excess / (baseline + 1e-7)
            else:  # first step: its own excess risk is the baseline, used raw (official code)
                st["baseline"] = excess.clone()
        else:
            excess = excess / (st["baseline"] + 1e-7)  # §3.2 scale processing
        st["weights"] = torch.softmax(
            torch.log(st["weights"]) + self.robust_step_size * excess, dim=0
        )  # ExcessMTL Eq. 9
        return st["weights"].cpu()

    def get_extra_state(self) -> dict:
        return {k: (v.clone() if isinstance(v, Tensor) else v) for k, v in self._state.items()}

    def set_extra_state(self, state: dict) -> None:
        self._state = {k: (v.clone() if isinstance(v, Tensor) else v) for k, v in state.items()}
