"""Models of coremtl_lite: the CORE-MTL dual-stream model (paper §3), the vanilla shared-encoder model of
the baselines, MTAN and MMoE (architecture baselines) and the MT-CRL model.

``build_model(cfg.model, tasks)`` picks the dual-stream model (with the grounding decoder unless
``model.grounding == "none"``) or the vanilla model (``model.dual_stream = False``).
``MODEL_BUILDERS[name](model_cfg, tasks, in_channels=3)`` names every architecture.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from coremtl_lite.models.decoders import GenericDecoder, PhysicsDecoder
from coremtl_lite.models.dual_stream import DualStreamModel, GroundedDualStreamModel, VanillaModel
from coremtl_lite.models.encoders import LiteEncoder, ResNetEncoder, build_encoder
from coremtl_lite.models.heads import DenseHead, GlobalHead
from coremtl_lite.models.mmoe import MMoE, build_mmoe
from coremtl_lite.models.mtan import MTAN, build_mtan

__all__ = ["DenseHead", "DualStreamModel", "GenericDecoder", "GlobalHead", "GroundedDualStreamModel", "LiteEncoder",
           "MMoE", "MODEL_BUILDERS", "MTAN", "PhysicsDecoder", "ResNetEncoder", "VanillaModel", "build_dual_stream",
           "build_encoder", "build_mmoe", "build_model", "build_mtan", "build_mtcrl", "build_vanilla"]


def build_dual_stream(model_cfg, tasks, in_channels: int = 3) -> nn.Module:
    """The CORE-MTL model (§3.1), with the grounding decoder of ``model_cfg.grounding`` (§3.2) unless none."""
    if model_cfg.grounding == "none":
        return DualStreamModel(model_cfg, tasks, in_channels)
    return GroundedDualStreamModel(model_cfg, tasks, in_channels)


def build_vanilla(model_cfg, tasks, in_channels: int = 3) -> nn.Module:
    """The vanilla shared-encoder model of the baselines (same encoder and heads, no streams)."""
    return VanillaModel(model_cfg, tasks, in_channels)


def build_mtcrl(model_cfg, tasks, in_channels: int = 3) -> nn.Module:
    """The MT-CRL model (Hu et al. 2022): K = 8 small CNN modules routed to per-task predictors by
    A = sigmoid(theta); for classification and attribute tasks on images (train it with ``train.method=mtcrl``)."""
    from coremtl_lite.models.mtcrl_model import build_mtcrl_model

    dense = [t.name for t in tasks if t.dense]
    if dense:
        raise ValueError(f"model.architecture=mtcrl predicts one vector per task; dense tasks {dense} need "
                         "another architecture")
    return build_mtcrl_model((in_channels, 0, 0), {t.name: t.channels for t in tasks})


MODEL_BUILDERS: dict[str, Callable[..., nn.Module]] = {"dual_stream": build_dual_stream, "vanilla": build_vanilla,
                                                       "mtan": build_mtan, "mmoe": build_mmoe, "mtcrl": build_mtcrl}


def build_model(model_cfg, tasks, in_channels: int = 3) -> nn.Module:
    """The model of ``model_cfg`` (a :class:`coremtl_lite.config.ModelConfig`) for ``tasks``.

    ``model_cfg.architecture`` (when the config has it and it is not ``"auto"``) names a builder of
    :data:`MODEL_BUILDERS`; otherwise ``dual_stream`` picks the CORE-MTL or the vanilla model.
    """
    arch = getattr(model_cfg, "architecture", "auto")
    if arch in (None, "", "auto"):
        arch = "dual_stream" if model_cfg.dual_stream else "vanilla"
    if arch not in MODEL_BUILDERS:
        raise ValueError(f"model.architecture={arch!r} is not one of auto, {', '.join(MODEL_BUILDERS)}")
    return MODEL_BUILDERS[arch](model_cfg, list(tasks), in_channels)
