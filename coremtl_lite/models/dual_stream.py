"""The CORE-MTL dual-stream model (paper §3.1) and the vanilla shared-encoder model of the baselines.

Both models follow one interface (CONTRIBUTING.md, "Models"):

* ``encode(image) -> enc``: a dict with ``size`` (input H, W), ``low`` (the encoder's stride-4 map),
  ``feature_map`` (the encoder output F), ``features`` (what the task heads read) and, for the
  dual-stream model, ``z_s`` and ``z_p``;
* ``predict(enc) -> {task: prediction}`` at input resolution, from ``enc`` only -- so a test (or a
  diagnostic) can feed its own ``z_s`` / ``z_p`` leaves and check what the heads depend on;
* ``forward(image)`` = ``predict(encode(image))`` packed as ``{"preds", "features", "z_s", "z_p"}``;
* ``shared_parameters()``: the encoder and the projectors (the Jacobian target of gradient methods);
* ``heads``: the per-task heads (an ``nn.ModuleDict``; the objective freezes them during warm-up).

:class:`DualStreamModel` (§3.1): z_s = P_s(F) (1x1 conv, spatial map (B, C_s, h, w)) and
z_p = GAP(P_p(F)) (1x1 conv then global average pooling, (B, C_p)). The task heads read z_s only --
the paper's structural constraint -- plus, like every DeepLab head (Appendix E), the encoder's
low-level stride-4 map (``low_level_skip``; it is shared with the vanilla model, so comparisons stay
fair). With ``leaky_heads=True`` the heads read ``cat(z_s, Q(F))`` with Q a 1x1 conv-BN-ReLU projection
of the raw backbone map F, the released code's variant: residual information that P_s discards
reaches the heads through Q.

:class:`GroundedDualStreamModel` adds the grounding decoder (§3.2) and ``decode(z_s, z_p, size=None)``.
:class:`VanillaModel`: the same encoder and heads, no streams; the heads read F.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from coremtl_lite.config import ModelConfig
from coremtl_lite.models.blocks import ConvBNReLU
from coremtl_lite.models.decoders import build_decoder
from coremtl_lite.models.encoders import build_encoder
from coremtl_lite.models.heads import build_heads

if TYPE_CHECKING:
    from coremtl_lite.tasks import Task

__all__ = ["DualStreamModel", "GroundedDualStreamModel", "VanillaModel"]


def _check_image(image: Tensor, in_channels: int) -> None:
    if image.dim() != 4 or image.shape[1] != in_channels:
        raise ValueError(
            f"model input must be an image batch (B, {in_channels}, H, W), got {tuple(image.shape)}"
        )


class _MTLBase(nn.Module):
    """Shared plumbing: encoder, heads, ``predict`` from an ``enc`` dict."""

    dual_stream = False

    def __init__(
        self,
        model_cfg: ModelConfig,
        tasks: Sequence[Task],
        in_channels: int,
        head_in: int,
        low_level_skip: bool,
    ):
        super().__init__()
        tasks = list(tasks)
        if not tasks:
            raise ValueError("build_model needs at least one task")
        self.task_names = [t.name for t in tasks]
        self.in_channels = in_channels
        self.encoder = build_encoder(model_cfg, in_channels)
        lite = model_cfg.encoder == "lite"
        self.output_stride = self.encoder.output_stride
        self.heads = build_heads(
            tasks,
            head_in if head_in else self.encoder.out_channels,
            self.encoder.low_channels,
            model_cfg.head_channels,
            lite,
            low_level_skip,
        )

    def head_input(self, enc: dict) -> Tensor:  # pragma: no cover - overridden
        raise NotImplementedError  # abstract: the vanilla and dual-stream models override it

    def predict(self, enc: dict) -> dict[str, Tensor]:
        """Task predictions from an ``encode`` dict (heads see :meth:`head_input` and ``low`` only)."""
        x, low, size = self.head_input(enc), enc.get("low"), tuple(enc["size"])
        return {name: head(x, low, size) for name, head in self.heads.items()}


class VanillaModel(_MTLBase):
    """A shared encoder with one head per task (the baselines' model; no streams, no decoder)."""

    def __init__(
        self, model_cfg: ModelConfig, tasks: Sequence[Task], in_channels: int = 3, low_level_skip: bool = True
    ):
        super().__init__(model_cfg, tasks, in_channels, 0, low_level_skip)

    def shared_parameters(self) -> list[nn.Parameter]:
        """The encoder's parameters."""
        return list(self.encoder.parameters())

    def encode(self, image: Tensor) -> dict:
        """``{"size", "low", "feature_map", "features"}`` with features = F."""
        _check_image(image, self.in_channels)
        low, fmap = self.encoder(image)
        return {"size": tuple(image.shape[-2:]), "low": low, "feature_map": fmap, "features": fmap}

    def head_input(self, enc: dict) -> Tensor:
        return enc["features"]

    def forward(self, image: Tensor) -> dict:
        enc = self.encode(image)
        return {"preds": self.predict(enc), "features": enc["features"]}


class DualStreamModel(_MTLBase):
    """Encoder -> (z_s, z_p) -> heads on z_s (paper §3.1; see module doc). No decoder (grounding none)."""

    dual_stream = True

    def __init__(
        self, model_cfg: ModelConfig, tasks: Sequence[Task], in_channels: int = 3, low_level_skip: bool = True
    ):
        c_s, c_p = model_cfg.semantic_channels, model_cfg.residual_channels
        self.leaky = bool(model_cfg.leaky_heads)
        super().__init__(model_cfg, tasks, in_channels, c_s * (2 if self.leaky else 1), low_level_skip)
        c_f = self.encoder.out_channels
        self.semantic_channels, self.residual_channels = c_s, c_p
        self.semantic_proj = nn.Conv2d(c_f, c_s, 1)  # P_s (§3.1)
        self.residual_proj = nn.Conv2d(c_f, c_p, 1)  # P_p (§3.1), pooled in encode
        self.leak_proj = ConvBNReLU(c_f, c_s, 1) if self.leaky else None  # released code's head input

    def shared_parameters(self) -> list[nn.Parameter]:
        """Encoder and projector parameters (P_s, P_p and, if leaky, the backbone projection Q)."""
        mods = [self.encoder, self.semantic_proj, self.residual_proj]
        if self.leak_proj is not None:
            mods.append(self.leak_proj)
        return [p for m in mods for p in m.parameters()]

    def encode(self, image: Tensor) -> dict:
        """``{"size", "low", "feature_map", "features", "z_s", "z_p"}`` (features = z_s)."""
        _check_image(image, self.in_channels)
        low, fmap = self.encoder(image)
        z_s = self.semantic_proj(fmap)  # z_s = P_s(F), (B, C_s, h, w)
        z_p = self.residual_proj(fmap).mean(dim=(2, 3))  # z_p = GAP(P_p(F)), (B, C_p)
        return {
            "size": tuple(image.shape[-2:]),
            "low": low,
            "feature_map": fmap,
            "features": z_s,
            "z_s": z_s,
            "z_p": z_p,
        }

    def head_input(self, enc: dict) -> Tensor:
        """z_s (default); cat(z_s, Q(F)) with leaky heads. Never z_p."""
        if self.leak_proj is None:
            return enc["z_s"]
        return torch.cat([enc["z_s"], self.leak_proj(enc["feature_map"])], dim=1)

    def forward(self, image: Tensor) -> dict:
        enc = self.encode(image)
        return {"preds": self.predict(enc), "features": enc["z_s"], "z_s": enc["z_s"], "z_p": enc["z_p"]}


class GroundedDualStreamModel(DualStreamModel):
    """:class:`DualStreamModel` plus the grounding decoder D(z_s, z_p) (paper §3.2) and :meth:`decode`."""

    def __init__(
        self, model_cfg: ModelConfig, tasks: Sequence[Task], in_channels: int = 3, low_level_skip: bool = True
    ):
        super().__init__(model_cfg, tasks, in_channels, low_level_skip)
        if in_channels != 3:
            raise ValueError(
                f"grounding decoders reconstruct RGB images; in_channels must be 3, got {in_channels}"
            )
        self.grounding = model_cfg.grounding
        render_stride = 2 if model_cfg.encoder == "lite" else 1  # see decoders.py: CPU cost of decoding
        decoder = build_decoder(
            model_cfg.grounding,
            self.semantic_channels,
            self.residual_channels,
            model_cfg.head_channels,
            self.output_stride,
            render_stride,
        )
        if decoder is None:
            raise ValueError("model.grounding='none' has no decoder; build a DualStreamModel instead")
        self.decoder = decoder

    def decode(self, z_s: Tensor, z_p: Tensor, size: tuple[int, ...] | None = None) -> dict[str, Tensor]:
        """D(z_s, z_p): a dict with ``recon`` (sRGB in [0, 1]) at ``size`` (default: output_stride x the
        z_s map), and for hard grounding ``albedo``, ``shading``, ``normal_phys``, ``lighting`` (Eq. 13)."""
        if size is None:
            size = (z_s.shape[-2] * self.output_stride, z_s.shape[-1] * self.output_stride)
        return self.decoder(z_s, z_p, tuple(size))
