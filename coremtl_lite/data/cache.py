"""Render each synthetic scene once: an in-memory cache in front of a dataset's ``get_batch``.

Synthetic datasets (ShadedScenes, ...) render a scene as a pure function of its index, so rendering
the same training scenes again every epoch -- and the same validation and test scenes at every
evaluation -- is wasted work (on a 2-core CPU it can cost more than the training step itself).
:class:`CachedDataset` renders every sample once, in fixed chunks of consecutive indices, and serves
it from memory afterwards; :data:`RENDER_THREADS` chunks are rendered at the same time (on 2 cores
1.0-1.9x the fill rate of one chunk after the other, ``benchmarks/bench_render.py``). The values are
the dataset's up to float rounding (a renderer may round differently in batches of different sizes,
~1e-7) and never depend on the access order, so a run and its exact resume see identical data.

**Memory.** A cached sample holds every tensor of the sample dict (image, labels, factors); a 64 px
ShadedScenes sample takes 0.15 MB (0.59 MB at 128 px), so the cpu profile's 1024 + 128 + 2 x 256
scenes take 0.25 GB. The trainer gives all its datasets together one budget (``Trainer(cache_bytes=...)``, default
:data:`DEFAULT_CACHE_BYTES` = 1 GiB; :class:`CacheBudget`): a dataset whose whole cache does not fit in
what is left is not cached at all and renders its batches each time (the gpu profile's 16384 training
scenes at 128 px, 9.7 GB, for example). The storage is allocated at a dataset's first batch and lives
as long as the trainer.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import torch
from torch import Tensor

from coremtl_lite.protocols import BatchDataset

#: default memory budget per cached dataset (bytes)
DEFAULT_CACHE_BYTES = 1 << 30
#: how many chunks a cache renders at once (:class:`CachedDataset.render_threads`)
RENDER_THREADS = 2
_POOLS: dict[int, ThreadPoolExecutor] = {}  # one shared pool per thread count
_POOLS_LOCK = threading.Lock()


def _forget_pools_after_fork() -> None:
    """A forked child (``experiments.processes.map_forked``) has none of its parent's pool threads, but
    the parent's executors think their idle workers exist and would queue work for them forever; the
    child starts its own pools (and a lock no parent thread can hold)."""
    global _POOLS_LOCK
    _POOLS.clear()
    _POOLS_LOCK = threading.Lock()


if hasattr(os, "register_at_fork"):  # POSIX; Windows has no fork
    os.register_at_fork(after_in_child=_forget_pools_after_fork)


def _render_chunks(dataset: Any, chunks: list[Tensor], threads: int) -> Iterator[dict[str, Any]]:
    """``dataset.get_batch`` of every chunk, in order; with ``threads`` > 1 up to that many at once.

    Each chunk is rendered by exactly the call a one-thread fill makes, so the values are the same."""
    if threads <= 1 or len(chunks) < 2:
        yield from (dataset.get_batch(ids.tolist()) for ids in chunks)
        return
    with _POOLS_LOCK:
        if threads not in _POOLS:
            _POOLS[threads] = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="coremtl-render")
        pool = _POOLS[threads]
    for start in range(0, len(chunks), threads):  # at most ``threads`` rendered chunks held at a time
        yield from pool.map(lambda ids: dataset.get_batch(ids.tolist()), chunks[start : start + threads])


class CachedDataset:
    """Memoises ``dataset.get_batch``; every other attribute (``task_info``, ``domain``, ...) is the dataset's.

    The storage (one tensor per leaf of the sample dict, nested dicts included) is allocated at the first
    batch; :meth:`nbytes` reports it. ``get_batch(indices)`` renders the fixed chunks of ``chunk``
    consecutive indices that hold indices not seen before (values then never depend on the order in
    which scenes were first asked for -- what exact resume needs), and serves everything from memory.
    """

    chunk = 64
    #: chunks rendered at the same time (Python threads: torch's operators release the GIL)
    render_threads = RENDER_THREADS

    def __init__(self, dataset: Any):
        if not isinstance(dataset, BatchDataset):
            raise TypeError(f"CachedDataset needs a dataset with get_batch, got {type(dataset).__name__}")
        self.dataset = dataset
        self._n = len(dataset)
        self._have = torch.zeros(self._n, dtype=torch.bool)
        self._store: dict[str, Any] | None = None
        self._lock = threading.Lock()  # the trainer renders ahead in a background thread (data/prefetch.py)

    def __len__(self) -> int:
        return self._n

    def __getattr__(self, name: str) -> Any:
        if name in ("dataset", "_n", "_have", "_store", "chunk", "_lock", "render_threads"):
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
        with self._lock:
            return self._get(idx)

    def _get(self, idx: Tensor) -> dict[str, Any]:
        missing = torch.unique(idx[~self._have[idx]])
        # render whole fixed chunks: a renderer's float rounding can depend on the batch it is part of
        # (vectorised tails), so a fixed grouping makes every cached value independent of access order
        chunks = [
            torch.arange(c * self.chunk, min((c + 1) * self.chunk, self._n))
            for c in torch.unique(missing // self.chunk).tolist()
        ]
        for ids, fresh in zip(chunks, _render_chunks(self.dataset, chunks, self.render_threads)):
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


class CacheBudget:
    """A memory budget shared by the datasets of one run: :meth:`wrap` caches a dataset only when its whole
    cache (:func:`cache_estimate`) fits in what is left, and takes it from the budget.

    The trainer wraps its training split first, then validation, then the test domains, so with a small
    budget the split read every epoch is the one kept in memory.
    """

    def __init__(self, max_bytes: int = DEFAULT_CACHE_BYTES):
        self.max_bytes = self.left = int(max_bytes)

    def __repr__(self) -> str:
        return f"CacheBudget({self.max_bytes} bytes, {self.left} left)"

    def wrap(self, dataset: Any) -> Any:
        """``CachedDataset(dataset)`` when it has ``get_batch``, tensor-only batches and fits in the budget
        left; else ``dataset`` unchanged."""
        if self.left <= 0 or not isinstance(dataset, BatchDataset) or isinstance(dataset, CachedDataset):
            return dataset
        try:
            need = cache_estimate(dataset)
        except TypeError:
            return dataset
        if need > self.left:
            return dataset
        self.left -= need
        return CachedDataset(dataset)


def maybe_cache(dataset: Any, max_bytes: int = DEFAULT_CACHE_BYTES) -> Any:
    """``CachedDataset(dataset)`` when it has ``get_batch``, tensor-only batches and fits in ``max_bytes``; else
    ``dataset`` unchanged."""
    return CacheBudget(max_bytes).wrap(dataset)


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
