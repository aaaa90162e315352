"""Shared fixtures for the methods tests: seeded Jacobians and a tiny multi-task regression model."""

from __future__ import annotations

import torch
from torch import nn


def random_jacobian(num_tasks: int, dim: int = 40, seed: int = 0) -> torch.Tensor:
    """A seeded float64 ``(T, P)`` Jacobian with standard-normal entries."""
    return torch.randn(num_tasks, dim, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


class TinyMTL(nn.Module):
    """A 2-layer shared trunk and one linear head per task (synthetic regression)."""

    def __init__(self, num_tasks: int = 3, d_in: int = 8, width: int = 16, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.trunk = nn.Sequential(nn.Linear(d_in, width), nn.Tanh(), nn.Linear(width, width), nn.Tanh())
        self.heads = nn.ModuleList(nn.Linear(width, 1) for _ in range(num_tasks))

    def shared_parameters(self):
        return list(self.trunk.parameters())

    def forward(self, x):
        z = self.trunk(x)
        return z, [h(z).squeeze(-1) for h in self.heads]


def make_problem(num_tasks: int = 3, n: int = 64, d_in: int = 8, seed: int = 0):
    """Inputs and targets: task t is a different random linear function of x, scaled by (t + 1)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d_in, generator=g)
    w = torch.randn(num_tasks, d_in, generator=g)
    y = (x @ w.T) * torch.arange(1, num_tasks + 1, dtype=torch.float32)
    return x, y


def task_losses(model, x, y, names):
    """``(features, {task: mse})`` of the model on a batch."""
    z, preds = model(x)
    return z, {t: ((p - y[:, i]) ** 2).mean() for i, (t, p) in enumerate(zip(names, preds))}
