"""Estimating the leakage coefficient of paper Eq. 8 on ShadedScenes, and Theorem 2.4's bound terms.

    L_leak = sup_{s, r≠r'} ||f_s(s, r) - f_s(s, r')|| / ||r - r'||                      (Eq. 8)

is the Lipschitz constant of the semantic stream in the residual factors. On ShadedScenes we know
``s`` and ``r`` and can render any ``(s, r')``, so we estimate it directly: for each scene we move
its residual factors towards those of a donor, ``r' = r + ε (r_donor - r)`` for a few ε, re-render
with the semantics fixed, and record ``||Δz_s|| / ||Δr||``. The sup over scenes is the plug-in
estimate (it only grows with more samples); a quantile (default 0.9) is the robust companion.

**Which coordinates of r.** The continuous residual factors that change the image: per-surface
albedo and texture parameters (only for surfaces present in the scene: absent objects' slots are
kept, since they change nothing), light direction, temperature, intensity, ambient, exposure and
noise level. Discrete factors (texture kind, noise seed) are kept from ``r``; the light direction is
renormalised after interpolation.

**Normalisation (ours; Eq. 8 has none).** ``r`` is a mix of colours, angles and kelvins, and ``z_s``
has an arbitrary scale, so we measure both in "typical spread" units:

* each residual coordinate is divided by its standard deviation over a reference sample of scenes
  (source and target domains pooled), and the vector by ``sqrt(D)`` (D = number of coordinates used),
  so that ``E||r̃ - E r̃||² = 1`` over the reference;
* ``z_s`` (and ``z_p``) are divided by the square root of their total variance over the clean scenes.

Then ``L̂ = 1`` reads "moving r by its typical spread moves z_s by its typical spread"; a ``z_s``
that ignores ``r`` gives exactly 0. The same numbers for ``z_p`` (its *sensitivity* to r) show
where the residual information went.

**Theorem 2.4 (Eq. 9)**, ``R_target ≤ R_source + K · L_leak · W1(P_source(r), P_target(r)) + λ*``:
:func:`residual_w1` computes the empirical W1 between the two domains' normalised residual vectors
(exact optimal matching of equal-size samples) and :func:`domain_risks` the per-domain task risks,
so a tutorial can put the measured gap next to ``L̂ · W1`` (K and λ* are unknown constants).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from coremtl_lite.diagnostics.streams import StreamFn, flatten_stream

__all__ = [
    "CONTINUOUS_RESIDUALS",
    "LeakageResult",
    "ResidualScale",
    "domain_risks",
    "estimate_leakage",
    "fit_residual_scale",
    "interpolate_residual",
    "residual_vector",
    "residual_w1",
]

#: continuous residual factors used for ||Δr|| (per-surface ones first)
PER_SURFACE = ("albedo", "texture_freq", "texture_angle", "texture_phase", "texture_amp")
GLOBAL = ("light_dir", "light_temperature", "light_intensity", "ambient", "exposure", "noise_std")
CONTINUOUS_RESIDUALS = PER_SURFACE + GLOBAL


def _surface_mask(semantic: dict[str, Tensor]) -> Tensor:
    """``(B, 6)`` bool: object slots present, plus the ground (always present)."""
    valid = semantic["valid"].bool()
    return torch.cat([valid, torch.ones(valid.shape[0], 1, dtype=torch.bool)], 1)


def residual_vector(residual: dict[str, Tensor]) -> Tensor:
    """The continuous residual factors as one ``(B, D)`` float64 vector (order: :data:`CONTINUOUS_RESIDUALS`)."""
    missing = [k for k in CONTINUOUS_RESIDUALS if k not in residual]
    if missing:
        raise KeyError(f"residual factors lack keys {missing}")
    b = residual["exposure"].shape[0]
    return torch.cat([residual[k].reshape(b, -1).double() for k in CONTINUOUS_RESIDUALS], 1)


@dataclass
class ResidualScale:
    """Per-coordinate scale of the residual vector (see the module docstring)."""

    std: Tensor  # (D,) standard deviation over the reference sample
    weight: Tensor  # (D,) 1 / (std sqrt(D_used)), 0 for constant coordinates

    def __call__(self, r: Tensor) -> Tensor:
        """Normalised residual vector ``r̃ = r * weight``."""
        return r * self.weight


def fit_residual_scale(residual_vectors: Sequence[Tensor]) -> ResidualScale:
    """Fit the normalisation on reference residual vectors (e.g. source and target scenes pooled)."""
    ref = torch.cat([torch.as_tensor(r).double() for r in residual_vectors], 0)
    if ref.shape[0] < 2:
        raise ValueError("fit_residual_scale needs at least 2 reference residual vectors")
    std = ref.std(0)
    used = std > 1e-8
    d_used = int(used.sum())
    if d_used == 0:
        raise ValueError("every residual coordinate is constant over the reference sample")
    weight = torch.where(used, 1.0 / (std.clamp_min(1e-12) * math.sqrt(d_used)), torch.zeros_like(std))
    return ResidualScale(std, weight)


def interpolate_residual(
    residual: dict[str, Tensor],
    donor: dict[str, Tensor],
    eps: float,
    semantic: dict[str, Tensor],
    discrete_from_donor: bool = False,
) -> dict[str, Tensor]:
    """``r + eps (r_donor - r)`` on the continuous factors of present surfaces (module docstring).

    Discrete factors (texture kind, noise seed) are kept from ``residual``, or taken from ``donor``
    when ``discrete_from_donor`` (then ``eps = 1`` gives the donor's residual on present surfaces).
    """
    new = {k: v.clone() for k, v in residual.items()}
    if discrete_from_donor:
        for k in ("texture_kind", "noise_seed"):
            if k in donor:
                new[k] = donor[k].clone()
    present = _surface_mask(semantic)
    for k in CONTINUOUS_RESIDUALS:
        a, b = residual[k].float(), donor[k].float()
        mixed = a + eps * (b - a)
        if k in PER_SURFACE:
            m = present.reshape(present.shape + (1,) * (a.dim() - 2))
            mixed = torch.where(m, mixed, a)
        new[k] = mixed.to(residual[k].dtype)
    new["light_dir"] = new["light_dir"] / new["light_dir"].norm(dim=-1, keepdim=True).clamp_min(1e-8)
    new.pop("sh", None)  # derived; ShadedScenes recomputes it from the lighting factors
    return new


@dataclass
class LeakageResult:
    """Per-sample ratios ||Δz̃|| / ||Δr̃|| for both streams and their summaries."""

    ratios_s: np.ndarray  # (N,) semantic stream (Eq. 8 estimate samples)
    ratios_p: np.ndarray  # (N,) residual stream (its sensitivity to r)
    eps: np.ndarray  # (N,) interpolation step of each sample
    quantile: float
    summary: dict[str, float] = field(default_factory=dict)

    def __post_init__(self):
        if not self.summary:
            q = self.quantile
            self.summary = {
                "leak_sup": float(np.max(self.ratios_s)),
                f"leak_q{int(q * 100)}": float(np.quantile(self.ratios_s, q)),
                "leak_mean": float(np.mean(self.ratios_s)),
                "p_sens_sup": float(np.max(self.ratios_p)),
                f"p_sens_q{int(q * 100)}": float(np.quantile(self.ratios_p, q)),
                "p_sens_mean": float(np.mean(self.ratios_p)),
            }

    @property
    def sup(self) -> float:
        """The plug-in estimate of L_leak (Eq. 8): the largest observed ratio."""
        return self.summary["leak_sup"]


def estimate_leakage(
    streams: StreamFn,
    scenes,
    indices,
    donor_scenes=None,
    eps: Sequence[float] = (0.25, 0.5, 1.0),
    quantile: float = 0.9,
    scale: ResidualScale | None = None,
    donor_shift: int = 1,
) -> LeakageResult:
    """Estimate L_leak (Eq. 8) of the semantic stream by re-rendering scenes with perturbed residuals.

    Args:
        streams: ``batch -> (z_s, z_p)``; it receives the rendered batch dicts (``image`` and labels).
        scenes: the ShadedScenes whose scenes (semantics and residuals) are perturbed.
        indices: scene indices (at least 2).
        donor_scenes: where donor residuals come from: the same scene index in this dataset (e.g. the
            ``target`` domain: a cross-domain direction); default: ``scenes`` itself with the scene
            ``donor_shift`` positions later in ``indices`` (an in-domain direction).
        eps: interpolation steps towards the donor.
        quantile: the robust summary's quantile.
        scale: residual normalisation; default: fitted on these scenes' and the donors' residuals.
    """
    indices = [int(i) for i in indices]
    if len(indices) < 2:
        raise ValueError("estimate_leakage needs at least 2 scenes")
    factors = scenes.sample_factors(indices)
    semantic, residual = factors["semantic"], factors["residual"]
    if donor_scenes is None:
        order = [(i + donor_shift) % len(indices) for i in range(len(indices))]
        donor = {k: v[order] for k, v in residual.items()}
    else:
        donor = donor_scenes.sample_residual(indices, semantic)
    if scale is None:
        scale = fit_residual_scale([residual_vector(residual), residual_vector(donor)])
    clean = scenes.render(semantic, residual)
    z_s, z_p = (flatten_stream(z) for z in streams(clean))
    unit_s = math.sqrt(max(float(((z_s - z_s.mean(0)) ** 2).sum(1).mean()), 1e-30))
    unit_p = math.sqrt(max(float(((z_p - z_p.mean(0)) ** 2).sum(1).mean()), 1e-30))
    r0 = scale(residual_vector(residual))
    rs, ps, es = [], [], []
    for e in eps:
        res_e = interpolate_residual(residual, donor, float(e), semantic)
        dr = (scale(residual_vector(res_e)) - r0).norm(dim=1)
        keep = dr > 1e-9
        if not keep.any():
            continue
        zs_e, zp_e = (flatten_stream(z) for z in streams(scenes.render(semantic, res_e)))
        rs.append(((zs_e - z_s).norm(dim=1) / unit_s / dr)[keep])
        ps.append(((zp_e - z_p).norm(dim=1) / unit_p / dr)[keep])
        es.append(torch.full((int(keep.sum()),), float(e)))
    if not rs:
        raise ValueError("the donors' residual factors equal the scenes' own: nothing was perturbed")
    return LeakageResult(torch.cat(rs).numpy(), torch.cat(ps).numpy(), torch.cat(es).numpy(), quantile)


def residual_w1(scenes_a, scenes_b, indices, scale: ResidualScale | None = None) -> float:
    """Empirical W1 between the normalised residual vectors of two domains (Theorem 2.4's W1 term).

    Exact for the two empirical measures: the optimal one-to-one matching of equal-size samples
    (``scipy.optimize.linear_sum_assignment``) under the Euclidean distance. Uses disjoint halves of
    ``indices`` for the two domains, so paired scenes (same ``s``) are not matched by construction.
    """
    from scipy.optimize import linear_sum_assignment

    indices = [int(i) for i in indices]
    half = len(indices) // 2
    if half < 2:
        raise ValueError("residual_w1 needs at least 4 indices")
    ra = residual_vector(scenes_a.sample_factors(indices[:half])["residual"])
    rb = residual_vector(scenes_b.sample_factors(indices[half : 2 * half])["residual"])
    if scale is None:
        scale = fit_residual_scale([ra, rb])
    cost = torch.cdist(scale(ra), scale(rb)).numpy()
    rows, cols = linear_sum_assignment(cost)
    return float(cost[rows, cols].mean())


def domain_risks(
    model: torch.nn.Module, tasks: Sequence, batches: dict[str, dict]
) -> dict[str, dict[str, float]]:
    """Task risks ``{domain: {task: loss, "total": sum}}`` of ``model`` on one batch per domain (Thm 2.4).

    ``tasks`` are :class:`coremtl_lite.tasks.Task` objects (``name`` and ``loss(pred, target)``).
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    out: dict[str, dict[str, float]] = {}
    try:
        with torch.no_grad():
            for domain, batch in batches.items():
                preds = model(batch["image"].to(device))["preds"]
                risks = {}
                for task in tasks:
                    if task.name not in batch:
                        raise KeyError(f"domain_risks: batch of {domain!r} lacks the target {task.name!r}")
                    risks[task.name] = float(task.loss(preds[task.name], batch[task.name].to(device)))
                risks["total"] = float(sum(risks.values()))
                out[domain] = risks
    finally:
        model.train(was_training)
    return out
