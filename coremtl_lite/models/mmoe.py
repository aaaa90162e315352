"""MMoE, Multi-gate Mixture-of-Experts (Ma et al. 2018), an architecture baseline (paper §4.1).

K experts E_k read the shared encoder map F; each task t has its own softmax gate over the experts,
computed from the globally pooled F:

    E_k = ReLU(BN(W_k F))  (1x1 conv, (B, D, h, w)),   g^t = softmax(V_t GAP(F)) in Delta^K,
    input of head t = sum_k g^t_k E_k.

The experts run as one 1x1 convolution with K x D output channels. The output dict exposes
``experts`` (B, K, D) -- each expert's map globally averaged, the module outputs Z_i that MT-CRL's
decorrelation loss reads -- ``expert_maps`` (B, K, D, h, w) and ``gates`` {task: (B, K)}.
``shared_parameters()`` = the encoder and the experts (the gates are task-specific).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from coremtl_lite.config import ModelConfig
from coremtl_lite.models.encoders import build_encoder
from coremtl_lite.models.heads import build_heads

if TYPE_CHECKING:
    from coremtl_lite.tasks import Task

__all__ = ["MMoE", "build_mmoe"]


class MMoE(nn.Module):
    """MMoE over a shared encoder (see module doc). ``num_experts`` K (default 8), ``expert_channels`` D
    (default ``model_cfg.semantic_channels``)."""

    dual_stream = False

    def __init__(
        self,
        model_cfg: ModelConfig,
        tasks: Sequence[Task],
        in_channels: int = 3,
        num_experts: int = 8,
        expert_channels: int | None = None,
    ):
        super().__init__()
        tasks = list(tasks)
        if not tasks:
            raise ValueError("build_mmoe needs at least one task")
        if num_experts < 1:
            raise ValueError(f"MMoE needs num_experts >= 1, got {num_experts}")
        self.task_names = [t.name for t in tasks]
        self.in_channels = in_channels
        self.num_experts = int(num_experts)
        self.expert_channels = int(expert_channels or model_cfg.semantic_channels)
        self.encoder = build_encoder(model_cfg, in_channels)
        self.output_stride = self.encoder.output_stride
        c_f, k, d = self.encoder.out_channels, self.num_experts, self.expert_channels
        self.experts = nn.Sequential(
            nn.Conv2d(c_f, k * d, 1, bias=False), nn.BatchNorm2d(k * d), nn.ReLU(inplace=True)
        )
        self.gates = nn.ModuleDict({t: nn.Linear(c_f, k) for t in self.task_names})
        self.heads = build_heads(
            tasks, d, self.encoder.low_channels, model_cfg.head_channels, model_cfg.encoder == "lite"
        )

    def shared_parameters(self) -> list[nn.Parameter]:
        """The encoder and the experts."""
        return [*self.encoder.parameters(), *self.experts.parameters()]

    def forward(self, image: Tensor) -> dict:
        if image.dim() != 4 or image.shape[1] != self.in_channels:
            raise ValueError(f"MMoE input must be (B, {self.in_channels}, H, W), got {tuple(image.shape)}")
        low, fmap = self.encoder(image)
        b, _, h, w = fmap.shape
        maps = self.experts(fmap).reshape(b, self.num_experts, self.expert_channels, h, w)  # E_k(F)
        pooled_f = fmap.mean(dim=(2, 3))
        size = tuple(image.shape[-2:])
        preds, gates = {}, {}
        for t in self.task_names:
            g = torch.softmax(self.gates[t](pooled_f), dim=1)  # per-task gate g^t
            gates[t] = g
            mixed = torch.einsum("bk,bkdhw->bdhw", g, maps)  # sum_k g^t_k E_k
            preds[t] = self.heads[t](mixed, low, size)
        return {
            "preds": preds,
            "features": fmap,
            "experts": maps.mean(dim=(3, 4)),
            "expert_maps": maps,
            "gates": gates,
        }


def build_mmoe(
    model_cfg: ModelConfig, tasks: Sequence[Task], in_channels: int = 3, num_experts: int = 8
) -> MMoE:
    """An :class:`MMoE` on ``model_cfg.encoder`` with the standard heads."""
    return MMoE(model_cfg, tasks, in_channels, num_experts)
