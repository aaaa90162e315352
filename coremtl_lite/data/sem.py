"""MultiSEM: the linear structural equation model of MT-CRL (appendix A.1 and D.1).

Two binary tasks ``task_a`` and ``task_b`` with labels Y in {0, 1} (the paper's {-1, +1} is
``2Y - 1``), balanced, agreeing with probability ``m_C = P(Y_a = Y_b)``, the label-label confounder
C_dist^MTL. Each task has its own d-dimensional Gaussian factor (MT-CRL Eq. 10):

    F_a ~ N((2 Y_a - 1) mu_a, sigma^2 I),    F_b ~ N((2 Y_b - 1) mu_b, sigma^2 I),

and the input is ``image = [F_a, F_b]`` (a vector of D = 2d). ``m_C`` differs between training
(default 0.9) and the shifted test (default 0.1): a model that reads the other task's factor
(non-causal for this task) fails under the shift. ``causal_mask[task]`` marks each task's causal
input dimensions for MT-CRL's spurious score.
"""

from __future__ import annotations

from typing import Any

import torch

from coremtl_lite.data import _random
from coremtl_lite.data._common import index_tensor, shift_split

SPLITS = ("train", "val", "test", "test_id")


class MultiSEM:
    """Samples of the two-task linear SEM (see the module docstring).

    Args:
        split: ``train``, ``val`` and ``test_id`` use ``m_train``; ``test`` uses ``m_test``.
        length: number of samples; dim: d, the size of each factor; mean_norm: |mu| (Bayes accuracy
        of a single task from its own factor is Phi(mean_norm / sigma)); sigma: factor noise std.
    """

    task_info = {"task_a": {"kind": "classification", "num_classes": 2},
                 "task_b": {"kind": "classification", "num_classes": 2}}

    def __init__(self, split: str = "train", length: int = 2048, seed: int = 0, dim: int = 5, m_train: float = 0.9,
                 m_test: float = 0.1, mean_norm: float = 1.5, sigma: float = 1.0):
        if split not in SPLITS:
            raise ValueError(f"MultiSEM split must be one of {SPLITS}, got {split!r}")
        for name, m in (("m_train", m_train), ("m_test", m_test)):
            if not 0.0 <= m <= 1.0:
                raise ValueError(f"MultiSEM {name} must be in [0, 1], got {m}")
        self.split, self.length, self.seed, self.dim, self.sigma = split, int(length), int(seed), int(dim), sigma
        self.m_c = m_test if split == "test" else m_train
        self.task_info = dict(type(self).task_info)
        g = torch.Generator().manual_seed(int(seed))
        mu = torch.randn(2, dim, generator=g)
        self.mu = mean_norm * mu / mu.norm(dim=1, keepdim=True)  # (2, d): mu_a, mu_b
        mask = torch.zeros(2 * dim, dtype=torch.bool)
        mask[:dim] = True
        self.causal_mask = {"task_a": mask, "task_b": ~mask}

    @staticmethod
    def domain_split(domain: str) -> str:
        """Evaluation domain -> split: ``source`` = ``test_id`` (training m_C), ``target`` = ``test``."""
        return shift_split("MultiSEM", domain)

    def __len__(self) -> int:
        return self.length

    def get_batch(self, indices) -> dict[str, Any]:
        """Collated samples: ``image`` (B, 2d), ``task_a``, ``task_b`` (int64) and ``factors``."""
        idx = index_tensor("MultiSEM", indices, self.length)
        key = _random.keys(self.seed, _random.stream_id("multisem:" + self.split), idx)
        u = _random.uniform(key, 2)
        y_a = (u[:, 0] < 0.5).long()
        agree = u[:, 1] < self.m_c  # P(Y_a = Y_b) = m_C (MT-CRL Table 4)
        y_b = torch.where(agree, y_a, 1 - y_a)
        eps = _random.normal(key ^ 0x3C6EF372, 2 * self.dim).view(-1, 2, self.dim)
        sign = torch.stack([2 * y_a - 1, 2 * y_b - 1], 1).float()[:, :, None]
        factors = sign * self.mu[None] + self.sigma * eps  # Eq. 10
        return {"image": factors.reshape(-1, 2 * self.dim), "task_a": y_a, "task_b": y_b,
                "factors": {"semantic": {"f_a": factors[:, 0], "f_b": factors[:, 1], "agree": agree},
                            "residual": {}}}

    def __getitem__(self, index: int) -> dict[str, Any]:
        b = self.get_batch([int(index)])
        return {"image": b["image"][0], "task_a": b["task_a"][0], "task_b": b["task_b"][0],
                "factors": {"semantic": {k: v[0] for k, v in b["factors"]["semantic"].items()}, "residual": {}}}


__all__ = ["MultiSEM"]
