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
