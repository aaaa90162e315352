"""Linear probes: what do z_s and z_p each know about the true semantic and residual factors?

On ShadedScenes the factors are known (paper Assumption 2.2 made concrete), so we can ask each
stream directly. A ridge regression (features standardised, ridge strength by cross-validation) is
fitted on one split's features and scored (R², per target, then averaged per factor group) on
another split. A well-factorised model has ``z_s`` predicting the semantic factors and ``z_p`` the
residual ones, not the other way round.

Targets (:func:`factor_targets`):

* semantic -- the pixel share of each class (from the segmentation label), the number of objects,
  the ground's planar tilt (2) and height, the mean depth;
* residual -- the light direction (3), colour temperature, intensity, ambient level, exposure, the
  ground's albedo (linear RGB) and the mean albedo of the objects present.

Map-shaped streams are global-average-pooled before probing (a linear probe on a pooled code).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from coremtl_lite.diagnostics.streams import StreamFn

__all__ = ["ProbeResult", "factor_targets", "linear_probes"]


def factor_targets(batch: dict, num_classes: int | None = None) -> dict[str, tuple[np.ndarray, list[str]]]:
    """``{"semantic": (Y_s, names), "residual": (Y_r, names)}`` from a ShadedScenes batch with ``factors``."""
    if "factors" not in batch:
        raise KeyError("factor_targets needs batch['factors'] (render ShadedScenes with with_factors=True)")
    sem, res = batch["factors"]["semantic"], batch["factors"]["residual"]
    seg = batch["segmentation"]
    k = int(num_classes or int(seg.max()) + 1)
    b = seg.shape[0]
    shares = torch.stack([(seg == c).float().flatten(1).mean(1) for c in range(k)], 1)
    depth = batch["depth"].flatten(1).mean(1, keepdim=True)
    ys = torch.cat(
        [
            shares,
            sem["num_objects"].float()[:, None],
            sem["ground_tilt"].float(),
            sem["ground_height"].float()[:, None],
            depth,
        ],
        1,
    )
    names_s = [f"share_class{c}" for c in range(k)] + [
        "num_objects",
        "tilt_x",
        "tilt_y",
        "ground_height",
        "mean_depth",
    ]
    valid = sem["valid"].float()
    albedo = res["albedo"].float()
    obj_albedo = (albedo[:, :-1] * valid[..., None]).sum(1) / valid.sum(1, keepdim=True).clamp_min(1.0)
    yr = torch.cat(
        [
            res["light_dir"].float(),
            res["light_temperature"].float()[:, None],
            res["light_intensity"].float()[:, None],
            res["ambient"].float()[:, None],
            res["exposure"].float()[:, None],
            albedo[:, -1],
            obj_albedo,
        ],
        1,
    )
    names_r = [
        "light_x",
        "light_y",
        "light_z",
        "temperature",
        "intensity",
        "ambient",
        "exposure",
        "ground_r",
        "ground_g",
        "ground_b",
        "objects_r",
        "objects_g",
        "objects_b",
    ]
    assert ys.shape == (b, len(names_s)) and yr.shape == (b, len(names_r))
    return {"semantic": (ys.double().numpy(), names_s), "residual": (yr.double().numpy(), names_r)}


@dataclass
class ProbeResult:
    """R² of each (stream, factor group) probe on the held-out split."""

    scores: dict[tuple[str, str], float]  # (stream, group) -> mean R² over the group's targets
    per_target: dict[tuple[str, str], dict[str, float]]  # (stream, group) -> {target: R²}

    def table(self) -> dict[str, dict[str, float]]:
        """``{stream: {group: R²}}`` for display."""
        out: dict[str, dict[str, float]] = {}
        for (stream, group), v in self.scores.items():
            out.setdefault(stream, {})[group] = v
        return out


def _pooled(z: Tensor) -> np.ndarray:
    z = z.float()
    if z.dim() == 4:
        z = z.mean(dim=(2, 3))
    return z.reshape(z.shape[0], -1).double().numpy()


def _r2(y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    ss_res = ((y_true - y_pred) ** 2).sum(0)
    ss_tot = ((y_true - y_true.mean(0)) ** 2).sum(0)
    return np.where(ss_tot > 1e-12, 1.0 - ss_res / np.maximum(ss_tot, 1e-12), np.nan)


def linear_probes(
    streams: StreamFn,
    fit_batch: dict,
    score_batch: dict,
    num_classes: int | None = None,
    alphas: tuple[float, ...] = (1e-2, 1e-1, 1.0, 10.0, 100.0, 1000.0),
) -> ProbeResult:
    """Fit ridge probes from each stream to each factor group on ``fit_batch``; R² on ``score_batch``.

    Targets constant on the fitting split are skipped (their R² is undefined).
    """
    from sklearn.linear_model import RidgeCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    k = (
        num_classes
        or int(max(int(fit_batch["segmentation"].max()), int(score_batch["segmentation"].max()))) + 1
    )
    t_fit, t_score = factor_targets(fit_batch, k), factor_targets(score_batch, k)
    zs_fit, zp_fit = streams(fit_batch)
    zs_sc, zp_sc = streams(score_batch)
    feats = {"z_s": (_pooled(zs_fit), _pooled(zs_sc)), "z_p": (_pooled(zp_fit), _pooled(zp_sc))}
    scores, per_target = {}, {}
    for group in ("semantic", "residual"):
        (y_fit, names), (y_sc, _) = t_fit[group], t_score[group]
        keep = y_fit.std(0) > 1e-9
        y_fit, y_sc = y_fit[:, keep], y_sc[:, keep]
        names = [n for n, k_ in zip(names, keep) if k_]
        mu, sd = y_fit.mean(0), y_fit.std(0)
        for stream, (x_fit, x_sc) in feats.items():
            probe = make_pipeline(StandardScaler(), RidgeCV(alphas=alphas))
            probe.fit(x_fit, (y_fit - mu) / sd)
            r2 = _r2((y_sc - mu) / sd, probe.predict(x_sc))
            per_target[(stream, group)] = dict(zip(names, r2.tolist()))
            scores[(stream, group)] = float(np.nanmean(r2))
    return ProbeResult(scores, per_target)
