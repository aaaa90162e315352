"""MultiSEM: the linear structural equation model of MT-CRL (appendix A.1, B and D.1).

T binary tasks ``task_a``, ``task_b``, ... (default T = 2) with labels Y in {0, 1} (the paper's
{-1, +1} is ``2Y - 1``), balanced, tied by the label-label confounder C_dist^MTL: for two tasks they
agree with probability ``m_C = P(Y_a = Y_b)``; with more tasks every task agrees with ``task_a``
with probability m_C (:func:`~coremtl_lite.data._common.confounded_labels`). Each task has its own
d-dimensional Gaussian factor (MT-CRL Eq. 10):

    F_t ~ N((2 Y_t - 1) mu_t, sigma^2 I),

and the input is ``image = [F_a, F_b, ...]`` (a vector of D = T d). ``m_C`` differs between training
(default 0.9) and the shifted test (default 0.1): a model that reads another task's factor
(non-causal for this task) fails under the shift. ``causal_mask[task]`` marks each task's causal
input dimensions for MT-CRL's spurious score. Growing T is MT-CRL's Table 5 (appendix B): every
new task adds a factor that is causal for it and spurious for all the others.
"""

from __future__ import annotations

from typing import Any

import torch

from coremtl_lite.data import _random
from coremtl_lite.data._common import confounded_labels, index_tensor, shift_split

SPLITS = ("train", "val", "test", "test_id")
MAX_TASKS = 26


def sem_task_names(num_tasks: int) -> list[str]:
    """``task_a``, ``task_b``, ...: the names of MultiSEM's ``num_tasks`` tasks."""
    if not 1 <= num_tasks <= MAX_TASKS:
        raise ValueError(f"MultiSEM num_tasks must be in 1..{MAX_TASKS}, got {num_tasks}")
    return [f"task_{chr(ord('a') + t)}" for t in range(num_tasks)]


class MultiSEM:
    """Samples of the T-task linear SEM (see the module docstring).

    Args:
        split: ``train`` and ``test_id`` use ``m_train``; ``val`` uses ``m_val`` (default: ``m_train``);
            ``test`` uses ``m_test``.
        length: number of samples; dim: d, the size of each factor; mean_norm: |mu| (Bayes accuracy
        of a single task from its own factor is Phi(mean_norm / sigma)); sigma: factor noise std;
        num_tasks: T (MT-CRL Table 5 grows it from 2 to 8).
    """

    def __init__(
        self,
        split: str = "train",
        length: int = 2048,
        seed: int = 0,
        dim: int = 5,
        m_train: float = 0.9,
        m_test: float = 0.1,
        mean_norm: float = 1.5,
        sigma: float = 1.0,
        num_tasks: int = 2,
        m_val: float | None = None,
    ):
        if split not in SPLITS:
            raise ValueError(f"MultiSEM split must be one of {SPLITS}, got {split!r}")
        m_val = m_train if m_val is None else m_val
        for name, m in (("m_train", m_train), ("m_val", m_val), ("m_test", m_test)):
            if not 0.0 <= m <= 1.0:
                raise ValueError(f"MultiSEM {name} must be in [0, 1], got {m}")
        names = sem_task_names(num_tasks)
        self.split, self.length, self.seed, self.dim, self.sigma = (
            split,
            int(length),
            int(seed),
            int(dim),
            sigma,
        )
        self.num_tasks = len(names)
        self.m_c = {"test": m_test, "val": m_val}.get(split, m_train)
        self.task_info = {t: {"kind": "classification", "num_classes": 2} for t in names}
        self.input_shape = (self.num_tasks * self.dim,)
        g = torch.Generator().manual_seed(int(seed))
        mu = torch.randn(self.num_tasks, dim, generator=g)
        self.mu = mean_norm * mu / mu.norm(dim=1, keepdim=True)  # (T, d): mu_a, mu_b, ...
        self.causal_mask = {}
        for t, name in enumerate(names):
            mask = torch.zeros(self.num_tasks * dim, dtype=torch.bool)
            mask[t * dim : (t + 1) * dim] = True
            self.causal_mask[name] = mask

    @staticmethod
    def domain_split(domain: str) -> str:
        """Evaluation domain -> split: ``source`` = ``test_id`` (training m_C), ``target`` = ``test``."""
        return shift_split("MultiSEM", domain)

    def __len__(self) -> int:
        return self.length

    def get_batch(self, indices) -> dict[str, Any]:
        """Collated samples: ``image`` (B, T d), one int64 label per task and ``factors``
        (``f_a``, ``f_b``, ... and ``agree``: whether each task agrees with ``task_a``, (B, T - 1))."""
        idx = index_tensor("MultiSEM", indices, self.length)
        key = _random.keys(self.seed, _random.stream_id("multisem:" + self.split), idx)
        labels = confounded_labels(_random.uniform(key, self.num_tasks), self.m_c)  # P(Y_a = Y_t) = m_C
        eps = _random.normal(key ^ 0x3C6EF372, self.num_tasks * self.dim).view(-1, self.num_tasks, self.dim)
        sign = (2 * labels - 1).float()[:, :, None]
        factors = sign * self.mu[None] + self.sigma * eps  # MT-CRL Eq. 10
        names = list(self.task_info)
        semantic = {f"f_{name[5:]}": factors[:, t] for t, name in enumerate(names)}
        semantic["agree"] = labels[:, 1:] == labels[:, :1]
        return {
            "image": factors.reshape(-1, self.num_tasks * self.dim),
            **{name: labels[:, t] for t, name in enumerate(names)},
            "factors": {"semantic": semantic, "residual": {}},
        }

    def __getitem__(self, index: int) -> dict[str, Any]:
        b = self.get_batch([int(index)])
        return {
            **{k: v[0] for k, v in b.items() if k != "factors"},
            "factors": {"semantic": {k: v[0] for k, v in b["factors"]["semantic"].items()}, "residual": {}},
        }


__all__ = ["MAX_TASKS", "MultiSEM", "sem_task_names"]
