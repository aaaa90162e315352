"""Theorem 2.4 measured: for one trained model, the OOD gap next to ``L_leak x W1`` at each shift severity.

The theorem (paper Eq. 9) bounds the target risk of heads that read the semantic stream only:

    R_target(h) <= R_source(h) + K * L_leak * W1(P_source(r), P_target(r)) + lambda*,

so the *OOD gap* ``R_target - R_source`` should stay below a line through the origin in
``L_leak x W1``. The paper could not measure either factor; on ShadedScenes both are measurable:

* **the gap**, per task, is the task's training loss (:meth:`coremtl_lite.tasks.Task.loss`: cross-entropy
  for segmentation, the depth and normal losses for the others) on ``shift:<s>`` minus on ``source``,
  over the same scenes (the same semantic factors ``s``, so the labels are identical and only the
  residual factors differ). We use the loss, not ``1 - mIoU``, because the theorem is about an
  expected loss, and mIoU is not an average over images;
* **L_leak** (Eq. 8) is :func:`~coremtl_lite.diagnostics.leakage.estimate_leakage` of the model's
  semantic stream (:func:`~coremtl_lite.diagnostics.streams.model_streams`): ``z_s`` for a dual-stream
  model; for a vanilla shared-encoder model, the encoder feature map that every task head reads (it
  has no semantic stream, so the theorem's "heads on the semantic stream" are its heads on all of its
  features). It is one number per model (a sup over all scenes and residual pairs): scenes of the
  source test split are moved towards the residuals of ``shift:1`` (the widest residual law of the
  study), with one residual normalisation fitted on those source and ``shift:1`` scenes, so that
  every model of a data configuration is measured in the same units;
* **W1** is the exact W1 between the residual priors of ``source`` and ``shift:<s>``
  (:func:`~coremtl_lite.data.scenes.shift_w1`): the sum over the continuous residual factors of each
  factor's W1 divided by the width of its support (unitless, 0 for ``shift:0``).

``K`` and ``lambda*`` are unknown constants of the theorem; :func:`bound_fit` takes ``lambda* = 0``
and the smallest ``K`` for which every measured point satisfies the bound.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from coremtl_lite.diagnostics.leakage import (
    domain_risks,
    estimate_leakage,
    fit_residual_scale,
    residual_vector,
)
from coremtl_lite.diagnostics.streams import StreamFn, model_streams

__all__ = ["OOD_SEVERITIES", "bound_fit", "correlations", "ood_bound_numbers", "probe_scale"]

#: the shift severities of the out-of-distribution study
OOD_SEVERITIES = (0.0, 0.25, 0.5, 0.75, 1.0)
#: the domain whose residual law is the widest: the leakage directions point to its residuals
WIDEST = "shift:1"


def probe_scale(source, widest, indices: Sequence[int]):
    """The residual normalisation of the study: fitted on the residuals of ``indices`` in ``source``
    and in ``widest`` (:func:`~coremtl_lite.diagnostics.leakage.fit_residual_scale`)."""
    ra = residual_vector(source.sample_factors(indices)["residual"])
    semantic = source.sample_semantic(indices)
    rb = residual_vector(widest.sample_residual(indices, semantic))
    return fit_residual_scale([ra, rb])


def _risks(
    model: torch.nn.Module, tasks: Sequence, scenes, indices: Sequence[int], batch_size: int
) -> dict[str, float]:
    """Mean task losses of ``model`` over the scenes ``indices`` (weighted by batch size)."""
    total: dict[str, float] = {}
    for start in range(0, len(indices), batch_size):
        chunk = list(indices[start : start + batch_size])
        risks = domain_risks(model, tasks, {"d": scenes.get_batch(chunk)})["d"]
        for k, v in risks.items():
            total[k] = total.get(k, 0.0) + v * len(chunk) / len(indices)
    return total


def ood_bound_numbers(
    model: torch.nn.Module,
    tasks: Sequence,
    make_scenes: Callable[[str], Any],
    rho: float,
    severities: Sequence[float] = OOD_SEVERITIES,
    n_risk: int = 64,
    n_leak: int = 16,
    batch_size: int = 32,
    streams: StreamFn | None = None,
) -> dict[str, Any]:
    """The numbers of Theorem 2.4 for one trained model (module docstring).

    Args:
        model: the trained model (``model(image)["preds"]``).
        tasks: its :class:`~coremtl_lite.tasks.Task` objects (the risks are their losses).
        make_scenes: ``domain name -> ShadedScenes`` of the test split (same seed, offset and size for
            every domain, so scene ``i`` has the same semantic factors everywhere).
        rho: the training ``data.rho`` (the source law the W1 is measured from).
        severities: the ``shift:<s>`` domains.
        n_risk: scenes per domain for the risks; n_leak: scenes for L_leak.
        streams: the stream function read by L_leak (default :func:`model_streams` of ``model``).

    Returns ``{"L_leak", "L_leak_q90", "points": [{"severity", "W1", "risk_source", "risk_shift",
    "gap"}, ...]}``, with ``risk_*`` and ``gap`` per task (and ``"total"``, their sum).
    """
    from coremtl_lite.data.scenes import shift_w1

    source = make_scenes("source")
    n_risk, n_leak = min(n_risk, len(source)), min(n_leak, len(source))
    if n_leak < 2:
        raise ValueError(
            f"ood_bound_numbers needs at least 2 test scenes, the source test set has {len(source)}"
        )
    widest = make_scenes(WIDEST)
    leak_idx = list(range(n_leak))
    leak = estimate_leakage(
        streams or model_streams(model),
        source,
        leak_idx,
        donor_scenes=widest,
        scale=probe_scale(source, widest, leak_idx),
    )
    risk_idx = list(range(n_risk))
    base = _risks(model, tasks, source, risk_idx, batch_size)
    points = []
    for s in severities:
        shifted = _risks(model, tasks, make_scenes(f"shift:{s:g}"), risk_idx, batch_size)
        points.append(
            {
                "severity": float(s),
                "W1": float(shift_w1(rho, float(s))["sum"]),
                "risk_source": base,
                "risk_shift": shifted,
                "gap": {k: shifted[k] - base[k] for k in base},
            }
        )
    return {"L_leak": leak.sup, "L_leak_q90": leak.summary["leak_q90"], "points": points}


def bound_fit(x: Sequence[float], gap: Sequence[float]) -> dict[str, float]:
    """The bound's line through the origin (``lambda* = 0``): ``K`` = the smallest slope with
    ``gap <= K x`` at every point with ``x > 0`` (0 when no gap is positive), and ``violations`` = the
    points with ``x = 0`` and a positive gap, which no K can bound without ``lambda* > 0``."""
    x_arr, g_arr = np.asarray(x, dtype=float), np.asarray(gap, dtype=float)
    pos = x_arr > 0
    slopes = g_arr[pos] / x_arr[pos]
    k = float(max(0.0, slopes.max())) if slopes.size else 0.0
    return {"K": k, "lambda": 0.0, "violations": int(((~pos) & (g_arr > 0)).sum())}


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    if x.size < 2 or x.std() == 0 or y.std() == 0:
        return math.nan
    return float(np.corrcoef(x, y)[0, 1])


def _ranks(v: np.ndarray) -> np.ndarray:
    from scipy.stats import rankdata

    return rankdata(v)


def correlations(
    x: Sequence[float],
    gap: Sequence[float],
    groups: Sequence[Any],
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, float]:
    """Pearson and Spearman correlations of ``gap`` with ``x`` and their bootstrap CIs over *runs*:
    ``groups`` names the run of each point, and each bootstrap sample redraws whole runs with
    replacement (the points of one run share a model, so they are not independent). Percentile
    intervals at ``level``; NaN where a resample is constant."""
    x_arr, g_arr = np.asarray(x, dtype=float), np.asarray(gap, dtype=float)
    labels = list(dict.fromkeys(groups))
    members = [np.array([i for i, g in enumerate(groups) if g == lab]) for lab in labels]
    out = {
        "pearson": _pearson(x_arr, g_arr),
        "spearman": _pearson(_ranks(x_arr), _ranks(g_arr)),
        "n": len(x_arr),
        "runs": len(labels),
    }
    rng = np.random.default_rng(seed)
    boots: dict[str, list[float]] = {"pearson": [], "spearman": []}
    for _ in range(n_boot if len(labels) > 1 else 0):
        idx = np.concatenate([members[j] for j in rng.integers(0, len(labels), len(labels))])
        bx, bg = x_arr[idx], g_arr[idx]
        boots["pearson"].append(_pearson(bx, bg))
        boots["spearman"].append(_pearson(_ranks(bx), _ranks(bg)))
    lo_q, hi_q = (1 - level) / 2, 1 - (1 - level) / 2
    for name, vals in boots.items():
        v = np.asarray([b for b in vals if not math.isnan(b)])
        out[f"{name}_lo"], out[f"{name}_hi"] = (
            (float(np.quantile(v, lo_q)), float(np.quantile(v, hi_q))) if v.size else (math.nan, math.nan)
        )
    return out
