"""Deterministic batching (``make_loader``), random flips and joined datasets.

The train/val/test splits are built by :mod:`coremtl_lite.data.registry`. The loader yields collated
sample dicts (CONTRIBUTING.md). Synthetic datasets render a whole batch at
once through ``get_batch``; other datasets are collated from ``__getitem__`` with torch's
``default_collate`` (optionally in worker processes). The order is a pure function of
``(seed, epoch)``; under data parallelism every rank receives a disjoint contiguous slice of each
*global* batch, so the union over ranks is exactly the single-process batch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, default_collate

from coremtl_lite.data import _random
from coremtl_lite.data._common import index_tensor
from coremtl_lite.protocols import BatchDataset


class BatchLoader:
    """An iterable of collated batch dicts; see :func:`make_loader`."""

    def __init__(
        self,
        dataset: Any,
        batch_size: int,
        shuffle: bool,
        seed: int,
        epoch: int = 0,
        drop_last: bool = False,
        rank: int = 0,
        world_size: int = 1,
        num_workers: int = 0,
        transform: Callable[[dict, torch.Generator], dict] | None = None,
    ):
        if batch_size <= 0:
            raise ValueError(f"batch_size must be > 0, got {batch_size}")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
        if batch_size < world_size:
            raise ValueError(f"the global batch_size ({batch_size}) must be >= world_size ({world_size})")
        self.dataset, self.batch_size, self.shuffle, self.seed = dataset, batch_size, shuffle, seed
        self.epoch, self.drop_last, self.rank, self.world_size = epoch, drop_last, rank, world_size
        self.num_workers, self.transform = num_workers, transform
        # the last epoch's batches, with the inputs they were computed from
        self._order: tuple[tuple, list[torch.Tensor]] | None = None

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose permutation the next iteration uses."""
        self.epoch = int(epoch)

    def _generator(self, salt: int) -> torch.Generator:
        key = _random.keys(self.seed, salt, torch.tensor([self.epoch]))
        g = torch.Generator()
        g.manual_seed(int(key[0]))
        return g

    def global_batches(self) -> list[torch.Tensor]:
        """The global batches of dataset indices of the current epoch (computed once per epoch: the
        trainer's held-out hook asks for one batch of it every step)."""
        n = len(self.dataset)
        inputs = (n, self.epoch, self.seed, self.shuffle, self.batch_size, self.drop_last, self.world_size)
        if self._order is None or self._order[0] != inputs:
            self._order = (inputs, self._batches(n))
        return list(self._order[1])

    def _batches(self, n: int) -> list[torch.Tensor]:
        order = torch.randperm(n, generator=self._generator(1)) if self.shuffle else torch.arange(n)
        batches = list(order.split(self.batch_size))
        if batches and self.drop_last and len(batches[-1]) < self.batch_size:
            batches.pop()
        # a batch too small to give every rank a sample is dropped on every rank (keeps ranks in step)
        return [b for b in batches if len(b) >= self.world_size]

    def rank_batches(self) -> list[list[int]]:
        """This rank's contiguous slice of every global batch."""
        out = []
        for b in self.global_batches():
            lo, hi = self.rank * len(b) // self.world_size, (self.rank + 1) * len(b) // self.world_size
            out.append(b[lo:hi].tolist())
        return out

    def __len__(self) -> int:
        return len(self.global_batches())

    def __iter__(self) -> Iterator[dict[str, Any]]:
        batches = self.rank_batches()
        gen = self._generator(2 + self.rank) if self.transform is not None else None
        if isinstance(self.dataset, BatchDataset):
            source: Any = (self.dataset.get_batch(b) for b in batches)
        elif self.num_workers > 0:
            source = DataLoader(
                self.dataset,
                batch_sampler=batches,
                num_workers=self.num_workers,
                collate_fn=default_collate,
                persistent_workers=False,
            )
        else:
            source = (default_collate([self.dataset[i] for i in b]) for b in batches)
        for batch in source:
            yield self.transform(batch, gen) if self.transform is not None and gen is not None else batch


def make_loader(
    dataset: Any,
    batch_size: int,
    shuffle: bool,
    seed: int,
    epoch: int = 0,
    drop_last: bool = False,
    rank: int = 0,
    world_size: int = 1,
    num_workers: int = 0,
    transform: Callable[[dict, torch.Generator], dict] | None = None,
) -> BatchLoader:
    """A deterministic loader of collated batch dicts (CONTRIBUTING.md contract).

    ``batch_size`` is the *global* batch; with ``world_size > 1`` rank ``r`` gets the ``r``-th
    contiguous slice of each global batch. The permutation depends only on ``(seed, epoch)``; call
    ``loader.set_epoch(e)`` (or pass ``epoch``) to move on. ``num_workers`` applies to datasets
    without ``get_batch``. ``transform(batch, generator)`` (e.g. :func:`flip_batch`) runs per batch
    with a generator seeded by ``(seed, epoch, rank)``.
    """
    return BatchLoader(
        dataset, batch_size, shuffle, seed, epoch, drop_last, rank, world_size, num_workers, transform
    )


def flip_batch(batch: dict[str, Any], generator: torch.Generator, p: float = 0.5) -> dict[str, Any]:
    """Random horizontal flips of a batch: image and dense labels, negating the normals' x component.

    ``factors`` are left unchanged (they describe the unflipped scene); a boolean ``flipped`` (B,)
    entry records which samples were mirrored.
    """
    image = batch["image"]
    if image.dim() != 4:
        return batch
    flip = torch.rand(image.shape[0], generator=generator) < p
    out = dict(batch)
    for key in ("image", "segmentation", "depth", "normal"):
        if key in batch:
            v = batch[key]
            out[key] = torch.where(flip.view(-1, *([1] * (v.dim() - 1))), v.flip(-1), v)
    if "normal" in out:
        sign = torch.where(flip, -1.0, 1.0).view(-1, 1, 1)
        out["normal"] = torch.cat([out["normal"][:, :1] * sign[:, None], out["normal"][:, 1:]], 1)
    out["flipped"] = flip
    return out


class JoinedDataset:
    """Two datasets end to end: indices ``0..len(first)-1`` are ``first``'s, the rest ``second``'s.

    Every other attribute (``task_info``, ``causal_mask``, ``input_shape``, ...) is ``first``'s. Both must
    return the same keys. ``get_batch`` (when both have it) renders each part with its own dataset and
    puts the samples back in the order asked for.
    """

    def __init__(self, first: Any, second: Any):
        self.first, self.second = first, second
        self._n1 = len(first)

    def __len__(self) -> int:
        return self._n1 + len(self.second)

    def __getattr__(self, name: str) -> Any:
        if name in ("first", "second", "_n1"):
            raise AttributeError(name)
        return getattr(self.first, name)

    def __getitem__(self, index: int) -> dict[str, Any]:
        index = int(index)
        if not 0 <= index < len(self):
            raise IndexError(f"JoinedDataset index {index} out of range (length {len(self)})")
        return self.first[index] if index < self._n1 else self.second[index - self._n1]

    def get_batch(self, indices) -> dict[str, Any]:
        idx = index_tensor("JoinedDataset", indices, len(self))
        in_first = idx < self._n1
        halves = [(in_first, self.first, idx[in_first]), (~in_first, self.second, idx[~in_first] - self._n1)]
        parts = [(where, ds.get_batch(sub)) for where, ds, sub in halves if sub.numel()]
        if len(parts) == 1:
            return parts[0][1]
        order = torch.cat([where.nonzero().squeeze(1) for where, _ in parts]).argsort()
        return _concat([b for _, b in parts], order)


def _concat(batches: list[Any], order: torch.Tensor) -> Any:
    """Concatenate collated batches along dim 0 (nested dicts too), then take rows ``order``."""
    first = batches[0]
    if isinstance(first, dict):
        return {k: _concat([b[k] for b in batches], order) for k in first}
    if isinstance(first, torch.Tensor):
        return torch.cat(batches)[order]
    raise TypeError(f"JoinedDataset can only join tensors and dicts of tensors, got {type(first).__name__}")
