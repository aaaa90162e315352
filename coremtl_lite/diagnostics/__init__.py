"""Looking inside a trained model (paper §4.4): are the streams what they claim to be?

Every diagnostic is a function ``(model, data) -> numbers``; their figures are drawn by
:mod:`coremtl_lite.viz` (e.g. :func:`~coremtl_lite.viz.plot_counterfactual_gallery`).

* :mod:`~coremtl_lite.diagnostics.counterfactuals` -- decode z_s of one image with z_p of another
  (Fig. 2), beside the true counterfactual ``render(s_A, r_B)`` on ShadedScenes;
* :mod:`~coremtl_lite.diagnostics.robustness` -- the feature-swap robustness ratio Δz_p / Δz_s
  (Table 3), under colour jitter and across domains, scale-free;
* :mod:`~coremtl_lite.diagnostics.leakage` -- a direct estimate of the leakage coefficient (Eq. 8)
  and the terms of Theorem 2.4's bound;
* :mod:`~coremtl_lite.diagnostics.probes` -- linear probes from each stream to the true factors;
* :mod:`~coremtl_lite.diagnostics.gradients` -- gradient orthogonality (Fig. 4-5, Prop. 2.5) and a
  trainer callback that logs it;
* :mod:`~coremtl_lite.diagnostics.streams` -- how every diagnostic reads (z_s, z_p), including the
  split of a vanilla model;
* :mod:`~coremtl_lite.diagnostics.pretrained` -- load a tutorial checkpoint or train a small model
  (the recipes and the run identity of :mod:`coremtl_lite.experiments`);
* :mod:`~coremtl_lite.diagnostics.summary` -- comparison tables (several models, the paper's values beside);
* :mod:`~coremtl_lite.diagnostics.spurious` -- MT-CRL's saliency-based analysis tools.
"""

from coremtl_lite.diagnostics.counterfactuals import (
    counterfactual_errors,
    counterfactual_grid,
    true_counterfactual_grid,
)
from coremtl_lite.diagnostics.gradients import (
    GradientCosineLogger,
    ReconProbe,
    cosine_matrix,
    gradient_cosines,
    representation_gradients,
)
from coremtl_lite.diagnostics.leakage import (
    LeakageResult,
    domain_risks,
    estimate_leakage,
    fit_residual_scale,
    interpolate_residual,
    residual_vector,
    residual_w1,
)
from coremtl_lite.diagnostics.probes import ProbeResult, factor_targets, linear_probes
from coremtl_lite.diagnostics.robustness import (
    RobustnessResult,
    color_jitter,
    cross_domain_pair,
    robustness_ratio,
)
from coremtl_lite.diagnostics.streams import model_streams

__all__ = [
    "GradientCosineLogger",
    "LeakageResult",
    "ProbeResult",
    "ReconProbe",
    "RobustnessResult",
    "color_jitter",
    "cosine_matrix",
    "counterfactual_errors",
    "counterfactual_grid",
    "cross_domain_pair",
    "domain_risks",
    "estimate_leakage",
    "factor_targets",
    "fit_residual_scale",
    "gradient_cosines",
    "interpolate_residual",
    "linear_probes",
    "model_streams",
    "representation_gradients",
    "residual_vector",
    "residual_w1",
    "robustness_ratio",
    "true_counterfactual_grid",
]
