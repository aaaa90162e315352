"""Tasks: what each head predicts, how it is scored and how it is evaluated (CONTRIBUTING.md, "Tasks").

A :class:`Task` bundles a batch/prediction key ``name``, its ``kind``, the number of output
``channels`` of its head, the supervised loss L_t of the total objective (paper Eq. 16), a meter
factory with LibMTL metric semantics (paper §4.1) and the metric directions (True = higher is better).

Kinds and their defaults:

============== ======================== ================================== =========================
kind           channels                 loss                               metrics
============== ======================== ================================== =========================
segmentation   ``num_classes``          cross-entropy, ignore -1           mIoU, pix_acc
depth          1                        L1 over gt != 0                    abs_err, rel_err
normal         3                        1 - cosine over valid pixels       mean, median, within_*
attributes     ``num_attributes``       BCE with logits                    acc (mean per attribute)
classification ``num_classes``          cross-entropy                      acc
============== ======================== ================================== =========================

Equation numbers are the CORE-MTL paper's; docs/method.md states each one (label ``eq-N``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from torch import Tensor

from coremtl_lite.losses.task_losses import LOSSES
from coremtl_lite.metrics import DIRECTIONS, Meter, make_meter

__all__ = ["DENSE_KINDS", "KINDS", "Task", "make_task", "tasks_from_info"]

KINDS = tuple(LOSSES)
#: kinds predicted per pixel at input resolution
DENSE_KINDS = ("segmentation", "depth", "normal")


@dataclass(frozen=True)
class Task:
    """One task: ``name`` (batch and prediction key), ``kind``, head ``channels``, ``loss(pred, target)``,
    ``make_meter()`` and ``directions[metric]`` (True when higher is better)."""

    name: str
    kind: str
    channels: int
    loss: Callable[[Tensor, Tensor], Tensor]
    make_meter: Callable[[], Meter]
    directions: Mapping[str, bool]

    @property
    def dense(self) -> bool:
        """True for per-pixel tasks (segmentation, depth, normal)."""
        return self.kind in DENSE_KINDS


def _channels(name: str, kind: str, info: Mapping[str, Any]) -> int:
    if kind in ("segmentation", "classification"):
        key = "num_classes"
    elif kind == "attributes":
        key = "num_attributes"
    else:
        return {"depth": 1, "normal": 3}[kind]
    if key not in info:
        raise KeyError(f"task_info[{name!r}] (kind {kind!r}) needs {key!r}; got keys {sorted(info)}")
    value = int(info[key])
    if value < 1:
        raise ValueError(f"task_info[{name!r}][{key!r}] must be >= 1, got {value}")
    return value


def make_task(name: str, info: Mapping[str, Any]) -> Task:
    """The :class:`Task` for one ``task_info`` entry ``{"kind": ..., "num_classes": ...}``."""
    if "kind" not in info:
        raise KeyError(f"task_info[{name!r}] has no 'kind'; got keys {sorted(info)}")
    kind = info["kind"]
    if kind not in LOSSES:
        raise ValueError(f"task_info[{name!r}]: unknown kind {kind!r}; choose one of {', '.join(KINDS)}")
    channels = _channels(name, kind, info)
    return Task(
        name=name,
        kind=kind,
        channels=channels,
        loss=LOSSES[kind],
        make_meter=functools.partial(make_meter, kind, dict(info)),
        directions=dict(DIRECTIONS[kind]),
    )


def tasks_from_info(
    task_info: Mapping[str, Mapping[str, Any]], names: Sequence[str] | None = None
) -> list[Task]:
    """The tasks ``names`` (default: all, in ``task_info`` order) built from a dataset's ``task_info``."""
    names = list(task_info) if names is None else list(names)
    if not names:
        raise ValueError("tasks_from_info: no task names given")
    missing = [n for n in names if n not in task_info]
    if missing:
        raise KeyError(
            f"tasks_from_info: tasks {missing} are not in the dataset's task_info "
            f"(available: {sorted(task_info)})"
        )
    if len(set(names)) != len(names):
        raise ValueError(f"tasks_from_info: duplicate task names in {names}")
    return [make_task(n, task_info[n]) for n in names]
