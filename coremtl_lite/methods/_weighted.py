"""Aggregators that combine the rows of J with a weight vector: ``aggregate(J) = w(J) @ J``."""

from __future__ import annotations

import torch
from torch import Tensor

from coremtl_lite.methods._solvers import combine
from coremtl_lite.methods.base import Aggregator


class WeightedAggregator(Aggregator):
    """An :class:`Aggregator` whose direction is ``w @ J`` for task weights ``w = self.weights(J)``.

    Every aggregator of this package is of this form (their directions lie in J's row span), which
    makes the weights inspectable and logged as ``weight/<task>``.
    """

    def weights(self, jacobian: Tensor) -> Tensor:
        """``(T, P)`` Jacobian -> ``(T,)`` weights (float64)."""
        raise NotImplementedError  # abstract

    def aggregate(self, jacobian: Tensor) -> Tensor:
        if jacobian.dim() != 2 or jacobian.shape[0] != self.num_tasks:
            raise ValueError(
                f"{self.name}: expected a ({self.num_tasks}, P) Jacobian, got shape {tuple(jacobian.shape)}"
            )
        w = torch.as_tensor(self.weights(jacobian), dtype=torch.float64)
        self._last_weights = w
        return combine(w, jacobian)

    def log_info(self, jacobian: Tensor, direction: Tensor) -> dict[str, float]:
        logs = super().log_info(jacobian, direction)
        w = getattr(self, "_last_weights", None)
        if w is not None:
            logs.update(self._weight_logs(w))
        return logs
