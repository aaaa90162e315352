"""Small helpers shared by the synthetic datasets with an in-distribution and a shifted test split."""

from __future__ import annotations

import torch

#: evaluation domain -> split for DigitPairs and MultiSEM: ``source`` is the in-distribution test split
#: (training correlations), ``target`` the shifted one
SHIFT_SPLITS = {"source": "test_id", "target": "test", "test": "test", "test_id": "test_id", "val": "val"}


def shift_split(dataset: str, domain: str) -> str:
    """The split that evaluation ``domain`` names, with an error naming the dataset and the choices."""
    if domain not in SHIFT_SPLITS:
        raise ValueError(f"{dataset} has no evaluation domain {domain!r}; use one of {sorted(SHIFT_SPLITS)}")
    return SHIFT_SPLITS[domain]


def index_tensor(dataset: str, indices, length: int) -> torch.Tensor:
    """``indices`` as a flat int64 tensor, checked against ``length``."""
    idx = torch.as_tensor(indices, dtype=torch.int64).reshape(-1)
    if idx.numel() and (idx.min() < 0 or idx.max() >= length):
        raise IndexError(f"{dataset} index out of range (length {length}): {idx.tolist()[:8]}")
    return idx


def confounded_labels(u: torch.Tensor, m_c: float) -> torch.Tensor:
    """Binary labels of T tasks tied by a label-label confounder (MT-CRL §2.1, C_dist^MTL).

    ``u`` (B, T) holds uniforms in [0, 1). Task 0's label is a fair coin; every other task agrees with
    it with probability ``m_c``: ``P(Y_0 = Y_t) = m_c``. For two tasks this is exactly MT-CRL's
    ``P(Y_a = Y_b) = m_C`` (its Table 4); for more tasks task 0 plays the common confounder. Returns
    int64 labels (B, T) in {0, 1}.
    """
    if u.dim() != 2 or u.shape[1] < 1:
        raise ValueError(f"confounded_labels needs uniforms of shape (B, T), got {tuple(u.shape)}")
    if not 0.0 <= m_c <= 1.0:
        raise ValueError(f"the label agreement m_C must be in [0, 1], got {m_c}")
    y0 = (u[:, :1] < 0.5).long()
    agree = u[:, 1:] < m_c
    return torch.cat([y0, torch.where(agree, y0, 1 - y0)], dim=1)
