"""Trivial predictors: the constants every trained model must beat.

A number means something only next to what a model that ignores its input would score. For each task
the trivial predictor outputs one constant, fitted on the *training* split:

* segmentation -- the majority class over all valid training pixels, everywhere;
* depth -- the mean over valid training pixels (ground truth != 0);
* normal -- the mean of the valid unit training normals, re-normalised;
* attributes -- each attribute's majority value;
* classification -- the majority class.

:class:`TrivialPredictor` is an ``nn.Module`` with the models' ``forward(image) -> {"preds": ...}``
contract, so the same evaluation pass and the same meters score it (``Trainer.evaluate_trivial``).
The fitted statistics (``stats``) also initialise the heads of real models where the data is
(:func:`coremtl_lite.models.heads.init_heads_from_data`): a depth head that starts at 0 against
targets around 3 spends its first epochs learning an offset.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["TrivialPredictor", "fit_trivial", "task_statistics"]


@torch.no_grad()
def task_statistics(
    batches: Iterable[Mapping[str, Any]], tasks: Sequence[Any], max_samples: int | None = None
) -> dict[str, Tensor]:
    """Per-task training statistics (see the module doc) from an iterable of batch dicts.

    ``segmentation`` and ``classification``: class frequencies (K,); ``depth``: the mean, a scalar;
    ``normal``: the unit mean normal (3,); ``attributes``: the rate of 1s per attribute (A,).
    Only the first ``max_samples`` samples are read when it is given. Raises ``ValueError`` when a
    task has no valid label in what was read.
    """
    sums: dict[str, Tensor] = {}
    counts: dict[str, Tensor] = {}
    seen = 0
    for batch in batches:
        n = len(batch["image"])
        if max_samples is not None and seen >= max_samples:
            break
        take = n if max_samples is None else min(n, max_samples - seen)
        seen += take
        for t in tasks:
            if t.name not in batch:
                raise KeyError(
                    f"task_statistics: the batch has no labels for task {t.name!r} (keys {sorted(batch)})"
                )
            y = batch[t.name][:take]
            if t.kind in ("segmentation", "classification"):
                y = y.reshape(-1).long()
                y = y[(y >= 0) & (y < t.channels)]
                s, c = torch.bincount(y, minlength=t.channels).double(), torch.tensor(float(y.numel()))
            elif t.kind == "depth":
                valid = y != 0
                s, c = y[valid].double().sum(), valid.sum().double()
            elif t.kind == "normal":
                valid = y.abs().sum(dim=1) > 0  # (B, H, W)
                s, c = y.permute(0, 2, 3, 1)[valid].double().sum(0), valid.sum().double()
            elif t.kind == "attributes":
                s, c = (y > 0.5).double().sum(0), torch.tensor(float(y.shape[0]))
            else:
                raise ValueError(
                    f"task_statistics: no trivial predictor for task {t.name!r} of kind {t.kind!r}"
                )
            sums[t.name] = s if t.name not in sums else sums[t.name] + s
            counts[t.name] = c if t.name not in counts else counts[t.name] + c
    stats: dict[str, Tensor] = {}
    for t in tasks:
        if t.name not in counts or float(counts[t.name]) == 0:
            raise ValueError(f"task_statistics: no valid label of task {t.name!r} in the training data read")
        mean = (sums[t.name] / counts[t.name]).float()
        if t.kind == "normal":
            mean = mean / mean.norm().clamp_min(1e-12)
        stats[t.name] = mean
    return stats


class TrivialPredictor(nn.Module):
    """The constant predictor of each task (module doc); ``forward(image)`` follows the models' contract."""

    def __init__(self, tasks: Sequence[Any], stats: Mapping[str, Tensor]):
        super().__init__()
        self.kinds = {t.name: t.kind for t in tasks}
        self.stats = {k: v.clone() for k, v in stats.items()}
        for t in tasks:
            self.register_buffer(f"const_{t.name}", self._constant(t.kind, stats[t.name]), persistent=False)

    @staticmethod
    def _constant(kind: str, stat: Tensor) -> Tensor:
        """The prediction vector of one task (logits, a value or a unit vector)."""
        if kind in ("segmentation", "classification"):
            return torch.nn.functional.one_hot(stat.argmax(), stat.numel()).float()  # the majority class
        if kind == "attributes":
            return torch.where(stat >= 0.5, 1.0, -1.0)  # logit sign = the majority value
        return stat.reshape(-1).float()  # depth (1,), normal (3,)

    def forward(self, image: Tensor) -> dict[str, Any]:
        b, h, w = image.shape[0], image.shape[-2], image.shape[-1]
        preds = {}
        for name, kind in self.kinds.items():
            c = getattr(self, f"const_{name}")
            if kind in ("segmentation", "depth", "normal"):
                preds[name] = c.view(1, -1, 1, 1).expand(b, -1, h, w)
            else:
                preds[name] = c.view(1, -1).expand(b, -1)
        return {"preds": preds, "features": None}


def fit_trivial(
    batches: Iterable[Mapping[str, Any]], tasks: Sequence[Any], max_samples: int | None = None
) -> TrivialPredictor:
    """The :class:`TrivialPredictor` of ``tasks`` fitted on ``batches`` (the training split)."""
    return TrivialPredictor(tasks, task_statistics(batches, tasks, max_samples))
