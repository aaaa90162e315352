"""Dynamic Weight Average (DWA): Liu, Johns & Davison, CVPR 2019 (the MTAN paper), DWA Eq. 7."""

from __future__ import annotations

import torch
from torch import Tensor

from coremtl_lite.methods._util import epoch_means
from coremtl_lite.methods.base import Weighting, register


@register("dwa")
class DynamicWeightAverage(Weighting):
    """DWA (Liu et al. 2019, DWA Eq. 7): weight tasks by how slowly their loss has been falling.

    ``lambda_k(t) = K exp(w_k(t-1)/T) / sum_i exp(w_i(t-1)/T)`` with the descending rate
    ``w_k(t-1) = L_k(t-1) / L_k(t-2)``, where ``L_k(t)`` is task k's mean training loss over epoch t
    and T the temperature (2 in the paper). The weights are uniform (1) until two epoch means
    exist. The epoch means arrive through :meth:`on_epoch_end`; the history lives in buffers, so it
    is part of ``state_dict()`` for exact resume. Same weights as torchjd's ``scalarization.DWA``
    (tested), which accumulates the epoch means itself instead.
    """

    # registered buffers (typed here; nn.Module would type them Tensor | Module)
    history: Tensor
    num_epochs: Tensor

    def __init__(self, task_names, temperature: float = 2.0):
        super().__init__(task_names)
        if temperature <= 0:
            raise ValueError(f"dwa: temperature must be > 0, got {temperature}")
        self.temperature = float(temperature)
        self.register_buffer("history", torch.zeros(2, self.num_tasks))  # rows: epoch t-2, t-1
        self.register_buffer("num_epochs", torch.zeros((), dtype=torch.long))

    def on_epoch_end(self, stats: dict[str, float]) -> None:
        """Record the epoch's mean loss per task: ``stats[task]`` (or ``stats["loss/<task>"]``)."""
        means = epoch_means(stats, self.task_names, "dwa")
        self.history[0] = self.history[1].clone()
        self.history[1] = torch.tensor(means, dtype=self.history.dtype)
        self.num_epochs += 1

    def weights(self, losses: Tensor) -> Tensor:
        if int(self.num_epochs) < 2:
            return torch.ones_like(losses)
        rate = self.history[1] / self.history[0]  # w_k(t-1) = L_k(t-1) / L_k(t-2)
        lam = self.num_tasks * torch.softmax(rate / self.temperature, dim=0)  # DWA Eq. 7
        return lam.to(losses)
