"""Render each synthetic scene once: an in-memory cache in front of a dataset's ``get_batch``.

Synthetic datasets (ShadedScenes, ...) render a scene as a pure function of its index, so rendering
the same training scenes again every epoch -- and the same validation and test scenes at every
evaluation -- is wasted work (on a 2-core CPU it can cost more than the training step itself).
:class:`CachedDataset` renders every sample once, in fixed chunks of consecutive indices, and serves
it from memory afterwards. The values are the dataset's up to float rounding (a renderer may round
differently in batches of different sizes, ~1e-7) and never depend on the access order, so a run
and its exact resume see identical data. The trainer wraps a dataset only when its whole cache fits
in ``max_bytes``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from coremtl_lite.protocols import BatchDataset

#: default memory budget per cached dataset (bytes)
DEFAULT_CACHE_BYTES = 1 << 30


class CachedDataset:
    """Memoises ``dataset.get_batch``; every other attribute (``task_info``, ``domain``, ...) is the dataset's.

    The storage (one tensor per leaf of the sample dict, nested dicts included) is allocated at the first
    batch; :meth:`nbytes` reports it. ``get_batch(indices)`` renders the fixed chunks of ``chunk``
    consecutive indices that hold indices not seen before (values then never depend on the order in
    which scenes were first asked for -- what exact resume needs), and serves everything from memory.
    """

    chunk = 64

    def __init__(self, dataset: Any):
        if not isinstance(dataset, BatchDataset):
            raise TypeError(f"CachedDataset needs a dataset with get_batch, got {type(dataset).__name__}")
        self.dataset = dataset
        self._n = len(dataset)
        self._have = torch.zeros(self._n, dtype=torch.bool)
        self._store: dict[str, Any] | None = None

    def __len__(self) -> int:
        return self._n

    def __getattr__(self, name: str) -> Any:
        if name in ("dataset", "_n", "_have", "_store", "chunk"):
            raise AttributeError(name)
        return getattr(self.dataset, name)

    def __repr__(self) -> str:
        return f"CachedDataset({self.dataset!r}, cached={int(self._have.sum())}/{self._n})"

    def nbytes(self) -> int:
        """Bytes held by the storage (0 before the first batch)."""
        return 0 if self._store is None else _nbytes(self._store)

    def get_batch(self, indices: Sequence[int] | Tensor) -> dict[str, Any]:
        idx = torch.as_tensor(list(indices) if not isinstance(indices, Tensor) else indices, dtype=torch.long)
        if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= self._n):
            raise IndexError(f"indices out of range for a dataset of {self._n} samples")
        missing = torch.unique(idx[~self._have[idx]])
        for chunk in torch.unique(missing // self.chunk).tolist():
            # render whole fixed chunks: a renderer's float rounding can depend on the batch it is part of
            # (vectorised tails), so a fixed grouping makes every cached value independent of access order
            ids = torch.arange(chunk * self.chunk, min((chunk + 1) * self.chunk, self._n))
            fresh = self.dataset.get_batch(ids.tolist())
            if self._store is None:
                self._store = _allocate(fresh, self._n)
            _write(self._store, fresh, ids)
            self._have[ids] = True
        return _read(self._store, idx)


def cache_estimate(dataset: Any, probe: int = 2) -> int:
    """Bytes a full :class:`CachedDataset` of ``dataset`` would hold (from ``probe`` rendered samples)."""
    n = min(probe, len(dataset))
    if n == 0:
        return 0
    sample = dataset.get_batch(list(range(n)))
    if not _all_tensors(sample):
        raise TypeError("the dataset's batches hold non-tensor values; they cannot be cached")
    return _nbytes(sample) * len(dataset) // n


def maybe_cache(dataset: Any, max_bytes: int = DEFAULT_CACHE_BYTES) -> Any:
    """``CachedDataset(dataset)`` when it has ``get_batch``, tensor-only batches and fits in ``max_bytes``; else
    ``dataset`` unchanged."""
    if max_bytes <= 0 or not isinstance(dataset, BatchDataset) or isinstance(dataset, CachedDataset):
        return dataset
    try:
        if cache_estimate(dataset) > max_bytes:
            return dataset
    except TypeError:
        return dataset
    return CachedDataset(dataset)


def _all_tensors(tree: Any) -> bool:
    if isinstance(tree, dict):
        return all(_all_tensors(v) for v in tree.values())
    return isinstance(tree, Tensor)


def _nbytes(tree: Any) -> int:
    if isinstance(tree, dict):
        return sum(_nbytes(v) for v in tree.values())
    return tree.numel() * tree.element_size()


def _allocate(tree: Any, n: int) -> Any:
    if isinstance(tree, dict):
        return {k: _allocate(v, n) for k, v in tree.items()}
    if not isinstance(tree, Tensor) or tree.dim() == 0:
        raise TypeError(f"cannot cache a batch leaf of type {type(tree).__name__}")
    return torch.empty((n, *tree.shape[1:]), dtype=tree.dtype)


def _write(store: Any, tree: Any, idx: Tensor) -> None:
    if isinstance(store, dict):
        if not isinstance(tree, dict) or set(tree) != set(store):
            raise ValueError("the dataset's batches do not all have the same keys; cannot cache them")
        for k in store:
            _write(store[k], tree[k], idx)
        return
    store[idx] = tree.detach().to("cpu")


def _read(store: Any, idx: Tensor) -> Any:
    if isinstance(store, dict):
        return {k: _read(v, idx) for k, v in store.items()}
    return store[idx]
