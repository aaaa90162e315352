"""Models of coremtl_lite: the CORE-MTL dual-stream model (paper §3), the vanilla shared-encoder model of
the baselines, MTAN and MMoE (architecture baselines) and the MT-CRL model.

``build_model(cfg.model, tasks)`` builds the architecture that ``model.architecture`` names -- the one
setting that chooses the network: ``dual_stream`` (CORE-MTL, with the grounding decoder unless
``model.grounding == "none"``), ``vanilla``, ``mtan``, ``mmoe`` or ``mtcrl``.
``MODEL_BUILDERS[name](model_cfg, tasks, in_channels=3)`` names every architecture;
``VECTOR_BUILDERS`` the ones that also take vector inputs (MultiSEM).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from torch import nn

from coremtl_lite.config import ModelConfig
from coremtl_lite.models.decoders import GenericDecoder, PhysicsDecoder
from coremtl_lite.models.dual_stream import DualStreamModel, GroundedDualStreamModel, VanillaModel
from coremtl_lite.models.encoders import LiteEncoder, ResNetEncoder, build_encoder
from coremtl_lite.models.heads import DenseHead, GlobalHead
from coremtl_lite.models.mmoe import MMoE, build_mmoe
from coremtl_lite.models.mtan import MTAN, build_mtan

if TYPE_CHECKING:
    from coremtl_lite.tasks import Task

__all__ = [
    "DenseHead",
    "DualStreamModel",
    "GenericDecoder",
    "GlobalHead",
    "GroundedDualStreamModel",
    "LiteEncoder",
    "MMoE",
    "MODEL_BUILDERS",
    "MTAN",
    "PhysicsDecoder",
    "ResNetEncoder",
    "VanillaModel",
    "build_dual_stream",
    "build_encoder",
    "build_mmoe",
    "build_model",
    "build_mtan",
    "build_mtcrl",
    "build_mtcrl_vector",
    "build_vanilla",
    "VECTOR_BUILDERS",
]


def build_dual_stream(model_cfg: ModelConfig, tasks: Sequence[Task], in_channels: int = 3) -> nn.Module:
    """The CORE-MTL model (§3.1), with the grounding decoder of ``model_cfg.grounding`` (§3.2) unless none."""
    if model_cfg.grounding == "none":
        return DualStreamModel(model_cfg, tasks, in_channels)
    return GroundedDualStreamModel(model_cfg, tasks, in_channels)


def build_vanilla(model_cfg: ModelConfig, tasks: Sequence[Task], in_channels: int = 3) -> nn.Module:
    """The vanilla shared-encoder model of the baselines (same encoder and heads, no streams)."""
    return VanillaModel(model_cfg, tasks, in_channels)


def _mtcrl(model_cfg: ModelConfig, tasks: Sequence[Task], input_shape: tuple[int, ...]) -> nn.Module:
    import torch

    from coremtl_lite.models.mtcrl_model import build_mtcrl_model

    dense = [t.name for t in tasks if t.dense]
    if dense:
        raise ValueError(
            f"model.architecture=mtcrl predicts one vector per task; dense tasks {dense} need "
            "another architecture"
        )
    seed = int(
        torch.randint(0, 2**31 - 1, ())
    )  # from the global RNG, which the trainer seeds with train.seed
    return build_mtcrl_model(
        input_shape,
        {t.name: t.channels for t in tasks},
        num_modules=model_cfg.num_modules,
        module_dim=model_cfg.module_dim,
        width=model_cfg.module_width,
        seed=seed,
    )


def build_mtcrl(model_cfg: ModelConfig, tasks: Sequence[Task], in_channels: int = 3) -> nn.Module:
    """The MT-CRL model (Hu et al. 2022) on images: K = ``model.num_modules`` small CNN modules routed to
    per-task predictors by A = sigmoid(theta); for classification and attribute tasks (train it with
    ``train.method=mtcrl``, or with any other method: A is then just another weight)."""
    return _mtcrl(model_cfg, tasks, (in_channels, 0, 0))


def build_mtcrl_vector(model_cfg: ModelConfig, tasks: Sequence[Task], dim: int) -> nn.Module:
    """The MT-CRL model on vector inputs of size ``dim`` (MultiSEM): K MLP modules."""
    return _mtcrl(model_cfg, tasks, (dim,))


MODEL_BUILDERS: dict[str, Callable[..., nn.Module]] = {
    "dual_stream": build_dual_stream,
    "vanilla": build_vanilla,
    "mtan": build_mtan,
    "mmoe": build_mmoe,
    "mtcrl": build_mtcrl,
}
#: the architectures that also take vector inputs (B, D), and their builders ``(model_cfg, tasks, D)``
VECTOR_BUILDERS: dict[str, Callable[..., nn.Module]] = {"mtcrl": build_mtcrl_vector}


def build_model(
    model_cfg: ModelConfig,
    tasks: Sequence[Task],
    in_channels: int = 3,
    input_shape: tuple[int, ...] | None = None,
) -> nn.Module:
    """The model of ``model_cfg`` (a :class:`coremtl_lite.config.ModelConfig`) for ``tasks``.

    ``model_cfg.architecture`` names a builder of :data:`MODEL_BUILDERS`.
    ``input_shape`` is a dataset's ``input_shape`` when it has one: ``(D,)`` for vector inputs
    (MultiSEM; only the architectures of :data:`VECTOR_BUILDERS`), ``(C, H, W)`` for images
    (``in_channels`` is then ``C``); ``None`` means images of ``in_channels`` channels.
    """
    arch = model_cfg.architecture
    if arch not in MODEL_BUILDERS:
        raise ValueError(f"model.architecture={arch!r} is not one of {', '.join(MODEL_BUILDERS)}")
    if input_shape is not None and len(input_shape) == 1:
        if arch not in VECTOR_BUILDERS:
            raise ValueError(
                f"model.architecture={arch!r} needs images (C, H, W), but the data are vectors of "
                f"size {input_shape[0]}; use model.architecture={' or '.join(VECTOR_BUILDERS)}"
            )
        return VECTOR_BUILDERS[arch](model_cfg, list(tasks), int(input_shape[0]))
    if input_shape is not None:
        in_channels = int(input_shape[0])
    return MODEL_BUILDERS[arch](model_cfg, list(tasks), in_channels)
