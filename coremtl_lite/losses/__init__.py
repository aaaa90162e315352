"""Losses of CORE-MTL: task losses, linear CKA (Eq. 11), grounding losses (Eq. 14-15), CFA (Eq. 12) and
the total objective (Eq. 16) with its staged schedule (:func:`build_objective`).

Equation numbers are the CORE-MTL paper's; docs/method.md states each one (label ``eq-N``).
"""

from coremtl_lite.losses.cka import gram_cka, linear_cka
from coremtl_lite.losses.objective import (
    Objective,
    ObjectiveOutput,
    build_objective,
    cfa_loss,
    frozen_batchnorm,
    independence_loss,
)
from coremtl_lite.losses.reconstruction import (
    PHYSICS_WEIGHTS,
    LPIPSLoss,
    SSIMLoss,
    build_perceptual,
    physics_regularisers,
    reconstruction_loss,
)
from coremtl_lite.losses.task_losses import (
    LOSSES,
    attributes_loss,
    classification_loss,
    depth_loss,
    normal_loss,
    segmentation_loss,
)

__all__ = [
    "LOSSES",
    "LPIPSLoss",
    "Objective",
    "ObjectiveOutput",
    "PHYSICS_WEIGHTS",
    "SSIMLoss",
    "attributes_loss",
    "build_objective",
    "build_perceptual",
    "cfa_loss",
    "classification_loss",
    "depth_loss",
    "frozen_batchnorm",
    "gram_cka",
    "independence_loss",
    "linear_cka",
    "normal_loss",
    "physics_regularisers",
    "reconstruction_loss",
    "segmentation_loss",
]
