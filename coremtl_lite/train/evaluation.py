"""The evaluation pass the trainer runs: task meters over whole datasets, several domains at once.

:func:`evaluate_datasets` feeds every batch of every dataset through the model in eval mode and
accumulates each task's meter (``Task.make_meter()``: confusion matrices, error sums, ... -- LibMTL
semantics as in the paper §4.1: statistics over the *whole* set, not averages of per-batch scores). Under data
parallelism each rank evaluates its slice and the meters' summable state is all-reduced before
``compute()``, so every rank returns the numbers of the full set.

:func:`relative_score` is the model-selection score: :func:`coremtl_lite.metrics.delta_m` (paper §4.1)
against the trivial predictors. Higher layers (``coremtl_lite.evaluate``, the CLI, the benchmarks) build on
these two.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from coremtl_lite.metrics import delta_m
from coremtl_lite.protocols import DistributedMeter
from coremtl_lite.train.distributed import DistContext, all_reduce_sum

Results = dict[str, dict[str, dict[str, float]]]  # {domain: {task: {metric: value}}}


def to_device(batch: Any, device: torch.device, channels_last: bool = False) -> Any:
    """Move every tensor of a (nested) batch dict to ``device``; 4-D ``image`` optionally channels-last."""
    if isinstance(batch, Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        out = {k: to_device(v, device) for k, v in batch.items()}
        img = out.get("image")
        if channels_last and isinstance(img, Tensor) and img.dim() == 4:
            out["image"] = img.contiguous(memory_format=torch.channels_last)
        return out
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(v, device) for v in batch)
    return batch


def reduce_meter(meter: DistributedMeter) -> None:
    """Sum a meter's state over ranks in place (no-op in one process).

    Meters (``coremtl_lite.metrics``) expose a flat summable ``state()`` and ``load_state(t)``: the
    states of disjoint data add up, so the all-reduced sum is the state of the whole set.
    """
    if not isinstance(meter, DistributedMeter):
        raise TypeError(
            f"meter {type(meter).__name__} has no state()/load_state(); it cannot be evaluated "
            "under data parallelism"
        )
    state = meter.state()
    if dist.is_available() and dist.is_initialized() and dist.get_backend() == "nccl":
        state = state.to(torch.device("cuda", torch.cuda.current_device()))
    meter.load_state(all_reduce_sum(state).cpu())


@torch.no_grad()
def evaluate_datasets(
    model: nn.Module,
    tasks: Sequence[Any],
    datasets: Mapping[str, Any],
    batch_size: int,
    device: torch.device,
    *,
    ctx: DistContext | None = None,
    seed: int = 0,
    autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
    channels_last: bool = False,
    progress: bool = False,
    prefetch: int = 0,
) -> Results:
    """``{domain: {task: {metric: value}}}`` of ``model`` on each dataset of ``datasets`` (paper §4.1, LibMTL).

    Every sample is seen once (no shuffling); under data parallelism rank ``r`` takes its slice of
    each batch and the meters are all-reduced. The model is put in eval mode and restored after.
    ``prefetch`` batches are rendered ahead in a background thread (:mod:`coremtl_lite.data.prefetch`;
    the same batches, so the same numbers); 0 renders them in the loop.
    """
    from tqdm.auto import tqdm

    from coremtl_lite.data import make_loader
    from coremtl_lite.data.prefetch import ahead

    ctx = ctx or DistContext()
    was_training = model.training
    model.eval()
    results: Results = {}
    try:
        for domain, dataset in datasets.items():
            meters = {t.name: t.make_meter() for t in tasks}
            loader = make_loader(
                dataset, batch_size, shuffle=False, seed=seed, rank=ctx.rank, world_size=ctx.world_size
            )
            source = ahead(loader, prefetch)
            try:
                for batch in tqdm(
                    source, total=len(loader), desc=f"eval {domain}", leave=False, disable=not progress
                ):
                    batch = to_device(batch, device, channels_last)
                    with autocast():
                        preds = model(batch["image"])["preds"]
                    for t in tasks:
                        if t.name not in batch:
                            raise KeyError(
                                f"evaluation data of domain {domain!r} has no target {t.name!r}; "
                                f"keys: {sorted(batch)}"
                            )
                        pred = preds[t.name]
                        meters[t.name].update(
                            pred.float() if pred.is_floating_point() else pred, batch[t.name]
                        )
            finally:
                source.close()  # stops the rendering thread, also on an error
            if ctx.enabled:
                for m in meters.values():
                    reduce_meter(m)
            results[domain] = {
                name: {k: float(v) for k, v in m.compute().items()} for name, m in meters.items()
            }
    finally:
        model.train(was_training)
    return results


def relative_score(
    result: Mapping[str, Mapping[str, float]],
    reference: Mapping[str, Mapping[str, float]],
    directions: Mapping[str, Mapping[str, bool]],
) -> float:
    """The model-selection score: :func:`coremtl_lite.metrics.delta_m` (paper §4.1) against any reference,
    lenient -- metrics missing anywhere or with a reference of 0 or NaN are skipped. The trainer scores
    every validation pass against the trivial predictors on the validation split; positive is better.
    Unlike the lenient Delta m% (NaN), no shared metric at all is an error: a selection needs a score.
    """
    score = delta_m(result, reference, directions, lenient=True)
    if math.isnan(score):
        raise ValueError(
            "relative_score: no metric is shared by the result, the reference and the directions "
            f"(tasks: result {sorted(result)}, reference {sorted(reference)}, "
            f"directions {sorted(directions)})"
        )
    return score
