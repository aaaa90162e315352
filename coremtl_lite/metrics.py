"""Evaluation metrics with LibMTL's semantics (the paper follows them, §4.1), as meters with summable tensor state.

Every meter has ``update(pred, target)`` (one batch), ``compute() -> {metric: float}``, ``reset()``
and a flat float64 ``state()`` / ``load_state(t)`` pair: the state of two meters over disjoint data
*adds up* to the state of one meter over their union, so distributed evaluation all-reduces
``state()`` with a sum and loads the result back.

Conventions (LibMTL's ``examples/nyu/utils.py`` and ``examples/cityscapes``; where we deviate it says why):

* **Segmentation** (:class:`SegmentationMeter`): a K x K confusion matrix accumulated over the whole
  evaluation set, void label ``-1`` (and any label outside ``[0, K)``) ignored; prediction = argmax of
  the logits. ``mIoU`` = mean over classes of TP / (TP + FP + FN); ``pix_acc`` = trace / total.
  *Absent classes*: LibMTL takes ``torch.mean`` over all K classes, so a class that is neither in the
  ground truth nor predicted anywhere (union 0, IoU 0/0) makes its mIoU NaN. Here such classes are
  left out of the mean (a nan-mean); a class that is in the ground truth but never predicted, or
  predicted but never in the ground truth, counts with IoU 0. Whenever LibMTL's value is finite the
  two agree exactly.
* **Depth** (:class:`DepthMeter`): over pixels with ground truth != 0, ``abs_err`` = mean |d_hat - d| and
  ``rel_err`` = mean |d_hat - d| / d. The mean is over all valid pixels of the set (LibMTL averages
  per-batch means weighted by batch size; the two agree when batches have equal valid-pixel counts,
  and ours does not depend on the batching).
* **Normals** (:class:`NormalMeter`): prediction L2-normalised, per valid pixel (ground truth non-zero)
  the angle in degrees; ``mean``, ``median`` and the shares ``within_11.25``, ``within_22.5``,
  ``within_30`` (strictly below the threshold, as LibMTL). The median comes from a histogram of
  :data:`NORMAL_HIST_BINS` bins over [0, 180] degrees (resolution 0.01 degree, linear interpolation
  inside the bin), so it is summable; it is within 0.01 degree of the exact median.
* **Attributes** (:class:`AttributesMeter`): logit > 0 predicts 1; per-attribute accuracy, then the
  mean over attributes (``acc``).
* **Classification** (:class:`ClassificationMeter`): top-1 accuracy (``acc``).

:func:`delta_m` is the multi-task summary Delta m% against a reference (single-task learning, or the
trivial predictors for model selection), the only implementation of the formula in the package.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import Tensor

__all__ = [
    "AttributesMeter",
    "ClassificationMeter",
    "DIRECTIONS",
    "DepthMeter",
    "Meter",
    "NORMAL_HIST_BINS",
    "NormalMeter",
    "SegmentationMeter",
    "delta_m",
    "make_meter",
]

#: number of histogram bins over [0, 180] degrees used for the normal median (0.01 degree each)
NORMAL_HIST_BINS = 18000

#: metric -> True when higher is better, per task kind
DIRECTIONS: dict[str, dict[str, bool]] = {
    "segmentation": {"mIoU": True, "pix_acc": True},
    "depth": {"abs_err": False, "rel_err": False},
    "normal": {"mean": False, "median": False, "within_11.25": True, "within_22.5": True, "within_30": True},
    "attributes": {"acc": True},
    "classification": {"acc": True},
}


class Meter:
    """Base class: a flat float64 summable state (``self._state``) plus ``update`` and ``compute``."""

    kind = ""

    def __init__(self, size: int):
        self._state = torch.zeros(size, dtype=torch.float64)

    def reset(self) -> None:
        """Forget every update."""
        self._state.zero_()

    def state(self) -> Tensor:
        """The flat float64 state (a copy); states of disjoint data add up (all-reduce with a sum)."""
        return self._state.clone()

    def load_state(self, state: Tensor) -> None:
        """Replace the state (e.g. by the all-reduced sum of every process's :meth:`state`)."""
        state = torch.as_tensor(state)
        if state.shape != self._state.shape:
            raise ValueError(
                f"{type(self).__name__}.load_state: expected shape {tuple(self._state.shape)}, "
                f"got {tuple(state.shape)}"
            )
        self._state = state.detach().to("cpu", torch.float64).clone()

    def merge(self, other: Meter) -> None:
        """Add another meter's state to this one (the single-process form of the all-reduce)."""
        self.load_state(self._state + other.state())

    def update(self, pred: Tensor, target: Tensor) -> None:  # pragma: no cover - abstract
        raise NotImplementedError  # abstract: every meter implements it

    def compute(self) -> dict[str, float]:  # pragma: no cover - abstract
        raise NotImplementedError  # abstract: every meter implements it


class SegmentationMeter(Meter):
    """Confusion matrix over the whole set; mIoU (nan-safe, see module doc) and pixel accuracy."""

    kind = "segmentation"

    def __init__(self, num_classes: int):
        if num_classes < 1:
            raise ValueError(f"SegmentationMeter needs num_classes >= 1, got {num_classes}")
        self.num_classes = int(num_classes)
        super().__init__(self.num_classes**2)

    def confusion(self) -> Tensor:
        """(K, K) float64 confusion matrix, rows = ground truth, columns = prediction."""
        return self._state.view(self.num_classes, self.num_classes)

    @torch.no_grad()
    def update(self, pred: Tensor, target: Tensor) -> None:
        """``pred``: logits (B, K, H, W) or labels (B, H, W); ``target``: (B, H, W) int, -1 = void."""
        k = self.num_classes
        if pred.dim() == 4:
            if pred.shape[1] != k:
                raise ValueError(f"SegmentationMeter: logits must have {k} channels, got {tuple(pred.shape)}")
            # argmax over the channels of a channels-last copy: the same labels (first maximum on ties), and
            # several times faster on CPU than a strided reduction over dim 1 of an NCHW map
            pred = pred.contiguous(memory_format=torch.channels_last).argmax(dim=1)
        if pred.shape != target.shape:
            raise ValueError(
                f"SegmentationMeter: prediction {tuple(pred.shape)} and target {tuple(target.shape)} differ"
            )
        pred, target = pred.reshape(-1).long().cpu(), target.reshape(-1).long().cpu()
        valid = (target >= 0) & (target < k)
        idx = torch.where(valid, k * target + pred, k * k)  # void pixels go to one extra bin, dropped below
        self._state += torch.bincount(idx, minlength=k * k + 1)[: k * k].to(torch.float64)

    def compute(self) -> dict[str, float]:
        h = self.confusion()
        tp = torch.diag(h)
        union = h.sum(0) + h.sum(1) - tp
        present = union > 0
        miou = float((tp[present] / union[present]).mean()) if bool(present.any()) else float("nan")
        total = h.sum()
        acc = float(tp.sum() / total) if total > 0 else float("nan")
        return {"mIoU": miou, "pix_acc": acc}


class DepthMeter(Meter):
    """Absolute and relative depth error over pixels with ground truth != 0."""

    kind = "depth"

    def __init__(self):
        super().__init__(3)  # sum |e|, sum |e|/d, count

    @torch.no_grad()
    def update(self, pred: Tensor, target: Tensor) -> None:
        if pred.shape != target.shape:
            raise ValueError(
                f"DepthMeter: prediction {tuple(pred.shape)} and target {tuple(target.shape)} differ"
            )
        pred, target = pred.detach().double().cpu(), target.detach().double().cpu()
        mask = target != 0
        err = torch.where(mask, (pred - target).abs(), 0.0)
        rel = err / torch.where(mask, target, 1.0)
        self._state += torch.stack([err.sum(), rel.sum(), mask.sum().double()])

    def compute(self) -> dict[str, float]:
        s_abs, s_rel, n = self._state.tolist()
        if n == 0:
            return {"abs_err": float("nan"), "rel_err": float("nan")}
        return {"abs_err": s_abs / n, "rel_err": s_rel / n}


class NormalMeter(Meter):
    """Angular error of normals in degrees: mean, median (histogram, 0.01 deg), share within 11.25/22.5/30."""

    kind = "normal"
    THRESHOLDS = (11.25, 22.5, 30.0)

    def __init__(self, bins: int = NORMAL_HIST_BINS):
        self.bins = int(bins)
        super().__init__(2 + len(self.THRESHOLDS) + self.bins)  # sum angle, count, within..., histogram

    @torch.no_grad()
    def update(self, pred: Tensor, target: Tensor) -> None:
        if pred.shape != target.shape or pred.dim() != 4 or pred.shape[1] != 3:
            raise ValueError(
                f"NormalMeter: expects (B, 3, H, W) prediction and target, got {tuple(pred.shape)} "
                f"and {tuple(target.shape)}"
            )
        pred = pred.detach().double().cpu()
        # pred / max(||pred||, 1e-12) as F.normalize, with the norm written as a sum of squares over the
        # three channels (F.normalize's vector norm over dim 1 of an NCHW map is ~100x slower on CPU)
        pred = pred / pred.pow(2).sum(dim=1, keepdim=True).sqrt().clamp_min(1e-12)
        target = target.detach().double().cpu()
        mask = target.abs().sum(dim=1) > 0
        cos = (pred * target).sum(dim=1)[mask].clamp(-1.0, 1.0)
        ang = torch.rad2deg(torch.acos(cos))
        within = [float((ang < t).sum()) for t in self.THRESHOLDS]
        hist = torch.histc(ang, bins=self.bins, min=0.0, max=180.0) if ang.numel() else torch.zeros(self.bins)
        self._state += torch.cat(
            [
                torch.tensor([float(ang.sum()), float(ang.numel()), *within], dtype=torch.float64),
                hist.double(),
            ]
        )

    def _order_statistic(self, rank: float, hist: Tensor, cum: Tensor) -> float:
        """The ``rank``-th smallest angle (1-indexed), placing a bin's angles evenly inside the bin."""
        b = min(int(torch.searchsorted(cum, torch.tensor(rank, dtype=torch.float64))), self.bins - 1)
        before = float(cum[b - 1]) if b > 0 else 0.0
        inside = float(hist[b])
        width = 180.0 / self.bins
        return (b + (rank - before - 0.5) / inside) * width if inside > 0 else (b + 0.5) * width

    def median(self) -> float:
        """The median angle from the histogram (the mean of the two middle order statistics for an even
        count, as ``np.median``); within one bin width (0.01 degree) of the exact median."""
        n = int(round(float(self._state[1])))
        if n == 0:
            return float("nan")
        hist = self._state[2 + len(self.THRESHOLDS) :]
        cum = torch.cumsum(hist, 0)
        if n % 2:
            return self._order_statistic((n + 1) / 2, hist, cum)
        return 0.5 * (self._order_statistic(n / 2, hist, cum) + self._order_statistic(n / 2 + 1, hist, cum))

    def compute(self) -> dict[str, float]:
        s, n = float(self._state[0]), float(self._state[1])
        if n == 0:
            return {
                "mean": float("nan"),
                "median": float("nan"),
                **{f"within_{t:g}": float("nan") for t in self.THRESHOLDS},
            }
        out = {"mean": s / n, "median": self.median()}
        for i, t in enumerate(self.THRESHOLDS):
            out[f"within_{t:g}"] = float(self._state[2 + i]) / n
        return out


class AttributesMeter(Meter):
    """Per-attribute accuracy (logit > 0 predicts 1), averaged over attributes."""

    kind = "attributes"

    def __init__(self, num_attributes: int):
        if num_attributes < 1:
            raise ValueError(f"AttributesMeter needs num_attributes >= 1, got {num_attributes}")
        self.num_attributes = int(num_attributes)
        super().__init__(self.num_attributes + 1)  # correct per attribute, sample count

    @torch.no_grad()
    def update(self, pred: Tensor, target: Tensor) -> None:
        if pred.shape != target.shape or pred.dim() != 2 or pred.shape[1] != self.num_attributes:
            raise ValueError(
                f"AttributesMeter: expects (B, {self.num_attributes}) logits and targets, got "
                f"{tuple(pred.shape)} and {tuple(target.shape)}"
            )
        correct = ((pred.detach().cpu() > 0) == (target.detach().cpu() > 0.5)).double().sum(0)
        self._state += torch.cat([correct, torch.tensor([float(pred.shape[0])], dtype=torch.float64)])

    def per_attribute(self) -> Tensor:
        """Accuracy of each attribute, (A,)."""
        n = float(self._state[-1])
        return self._state[:-1] / n if n > 0 else torch.full((self.num_attributes,), float("nan"))

    def compute(self) -> dict[str, float]:
        return {"acc": float(self.per_attribute().mean())}


class ClassificationMeter(Meter):
    """Top-1 accuracy."""

    kind = "classification"

    def __init__(self, num_classes: int | None = None):
        self.num_classes = num_classes
        super().__init__(2)  # correct, count

    @torch.no_grad()
    def update(self, pred: Tensor, target: Tensor) -> None:
        if pred.dim() != 2 or target.shape != (pred.shape[0],):
            raise ValueError(
                f"ClassificationMeter: expects (B, K) logits and (B,) targets, got {tuple(pred.shape)} "
                f"and {tuple(target.shape)}"
            )
        correct = (pred.detach().argmax(1).cpu() == target.detach().cpu().long()).sum()
        self._state += torch.tensor([float(correct), float(pred.shape[0])], dtype=torch.float64)

    def compute(self) -> dict[str, float]:
        c, n = self._state.tolist()
        return {"acc": c / n if n > 0 else float("nan")}


def make_meter(kind: str, info: Mapping[str, Any] | None = None) -> Meter:
    """A fresh meter for a task ``kind`` with its ``task_info`` entry ``info`` (num_classes, ...)."""
    info = dict(info or {})
    if kind == "segmentation":
        return SegmentationMeter(int(info["num_classes"]))
    if kind == "depth":
        return DepthMeter()
    if kind == "normal":
        return NormalMeter()
    if kind == "attributes":
        return AttributesMeter(int(info["num_attributes"]))
    if kind == "classification":
        return ClassificationMeter(info.get("num_classes"))
    raise ValueError(f"make_meter: unknown task kind {kind!r}; choose one of {', '.join(DIRECTIONS)}")


def _directions_of(tasks: Any) -> dict[str, dict[str, bool]]:
    if isinstance(tasks, Mapping):
        return {str(k): dict(v) for k, v in tasks.items()}
    out = {}
    for t in tasks if isinstance(tasks, Iterable) else ():
        out[t.name] = dict(t.directions)
    if not out:
        raise ValueError(
            "delta_m: 'tasks' must be a list of Task or a {task: {metric: higher_is_better}} mapping"
        )
    return out


def task_deltas(
    results: Mapping[str, Mapping[str, float]],
    reference: Mapping[str, Mapping[str, float]],
    tasks: Any,
    lenient: bool = False,
) -> dict[str, float]:
    """Per-task relative improvement over ``reference``, in %: (1/N_t) sum_i (-1)^{s_ti} (M_ti - M_ref,ti)
    / |M_ref,ti| * 100, the inner sum of Delta m% (paper §4.1, LibMTL); positive = better than the reference.

    ``lenient=False`` (the reported Delta m%): every listed metric must be present and the reference
    finite and non-zero, else ``KeyError`` / ``ValueError``. ``lenient=True`` (model selection, trivial
    checks): such metrics are skipped, and tasks left with no metric are omitted.
    """
    directions = _directions_of(tasks)
    out: dict[str, float] = {}
    for task, metrics in directions.items():
        if task not in results or task not in reference:
            if lenient:
                continue
            raise KeyError(
                f"delta_m: task {task!r} missing from the results or the reference "
                f"(have {sorted(results)} and {sorted(reference)})"
            )
        terms = []
        for metric, higher in metrics.items():
            if metric not in results[task] or metric not in reference[task]:
                if lenient:
                    continue
                raise KeyError(f"delta_m: metric {task}.{metric} missing from the results or the reference")
            m, ref = float(results[task][metric]), float(reference[task][metric])
            if ref == 0 or not math.isfinite(ref) or not math.isfinite(m):
                if lenient:
                    continue
                raise ValueError(f"delta_m: reference {task}.{metric} = {ref} cannot normalise (value {m})")
            sign = 1.0 if higher else -1.0  # (-1)^s, s = 1 when lower is better
            terms.append(sign * (m - ref) / abs(ref) * 100.0)
        if terms:
            out[task] = sum(terms) / len(terms)
    return out


def delta_m(
    results: Mapping[str, Mapping[str, float]],
    reference: Mapping[str, Mapping[str, float]],
    tasks: Any,
    lenient: bool = False,
) -> float:
    """Delta m% = (1/T) sum_t (1/N_t) sum_i (-1)^{s_ti} (M_ti - M_ref,ti) / M_ref,ti * 100 (paper §4.1, LibMTL).

    The one Delta m% of the package: the reported score against single-task learning, the trainer's
    model-selection score against the trivial predictors
    (:func:`coremtl_lite.train.evaluation.relative_score`) and the benchmark's per-seed score.
    ``s_ti = 1`` when lower is better, so a positive Delta m is an improvement over the reference.

    Args:
        results: ``{task: {metric: value}}`` of the model.
        reference: the same for the reference (single-task learning, or the trivial predictors).
        tasks: a list of :class:`coremtl_lite.tasks.Task` or ``{task: {metric: higher_is_better}}``.
        lenient: ``False`` -- every listed metric of every listed task must be in both results and the
            reference finite and non-zero (else ``KeyError`` / ``ValueError``); ``True`` -- such metrics
            are skipped (:func:`task_deltas`), and the result is NaN when no metric is left.
    """
    per_task = task_deltas(results, reference, tasks, lenient=lenient)
    return sum(per_task.values()) / len(per_task) if per_task else float("nan")


def below_trivial(
    results: Mapping[str, Mapping[str, Mapping[str, float]]],
    trivial: Mapping[str, Mapping[str, Mapping[str, float]]],
    tasks: Any,
) -> list[tuple[str, str, float]]:
    """``(domain, task, delta%)`` for every domain and task where ``results`` (``{domain: {task: {metric}}}``)
    does not beat the trivial predictors' ``trivial`` (its per-task delta over them is <= 0): a trained
    model that does not beat a constant is a bug to find (or a shift that erases the model), not a result."""
    out = []
    for domain, res in results.items():
        if domain not in trivial:
            continue
        for task, delta in task_deltas(res, trivial[domain], tasks, lenient=True).items():
            if delta <= 0:
                out.append((domain, task, delta))
    return out
