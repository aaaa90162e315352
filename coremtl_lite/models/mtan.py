"""MTAN, the Multi-Task Attention Network (Liu, Johns & Davison 2019), an architecture baseline (paper §4.1).

The shared encoder's stages are the global feature pool. Each task t owns one soft-attention module
per stage j that selects features from that stage:

    a_j^t = sigmoid(h_j^t([p_j, f_j(t_{j-1})])),     t_j = a_j^t ⊙ p_j

with p_j the shared output of stage j, f_j a shared 3x3 conv-BN-ReLU that brings the task's previous
attended feature to stage j's channels and resolution (strided when the stage downsamples), and
h_j^t two task-specific 1x1 conv-BN layers (ReLU between). The first stage has no previous feature,
a_1^t = sigmoid(h_1^t(p_1)). Task t's head then reads t_last (and t_1, its attended low-level map, for
the DeepLab skip); the heads are the same as the other models'. ``shared_parameters()`` = the encoder
and the shared f_j (the attention modules h are task-specific).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, cast

import torch
from torch import Tensor, nn

from coremtl_lite.config import ModelConfig
from coremtl_lite.models.blocks import ConvBNReLU
from coremtl_lite.models.encoders import build_encoder
from coremtl_lite.models.heads import build_heads

if TYPE_CHECKING:
    from coremtl_lite.tasks import Task

__all__ = ["MTAN", "build_mtan"]


def _attention(cin: int, cout: int) -> nn.Module:
    return nn.Sequential(
        ConvBNReLU(cin, cout, 1), nn.Conv2d(cout, cout, 1, bias=False), nn.BatchNorm2d(cout), nn.Sigmoid()
    )


class MTAN(nn.Module):
    """MTAN over the stages of a shared encoder (see module doc).

    ``forward(image)`` returns ``preds``, ``features`` (the shared encoder map F) and ``attended``
    ``{task: t_last}``.
    """

    dual_stream = False

    def __init__(self, model_cfg: ModelConfig, tasks: Sequence[Task], in_channels: int = 3):
        super().__init__()
        tasks = list(tasks)
        if not tasks:
            raise ValueError("build_mtan needs at least one task")
        self.task_names = [t.name for t in tasks]
        self.in_channels = in_channels
        self.encoder = build_encoder(model_cfg, in_channels)
        self.output_stride = self.encoder.output_stride
        with torch.no_grad():  # probe each stage's channels and stride
            x = torch.zeros(1, in_channels, 64, 64)
            x = self.encoder.normalise(x)
            chans, sizes = [], []
            was_training = self.encoder.training
            self.encoder.eval()
            for stage in self.encoder.stages():
                x = stage(x)
                chans.append(x.shape[1])
                sizes.append(x.shape[-1])
            self.encoder.train(was_training)
        self.shared_adapters = nn.ModuleList(
            [nn.Identity()]
            + [
                ConvBNReLU(chans[j - 1], chans[j], 3, stride=max(1, sizes[j - 1] // sizes[j]))
                for j in range(1, len(chans))
            ]
        )
        self.attention = nn.ModuleDict(
            {
                t: nn.ModuleList(
                    [_attention(chans[0], chans[0])]
                    + [_attention(2 * chans[j], chans[j]) for j in range(1, len(chans))]
                )
                for t in self.task_names
            }
        )
        self.heads = build_heads(
            tasks, chans[-1], chans[0], model_cfg.head_channels, model_cfg.encoder == "lite"
        )

    def shared_parameters(self) -> list[nn.Parameter]:
        """The encoder and the shared adapters f_j."""
        return [*self.encoder.parameters(), *self.shared_adapters.parameters()]

    def forward(self, image: Tensor) -> dict:
        if image.dim() != 4 or image.shape[1] != self.in_channels:
            raise ValueError(f"MTAN input must be (B, {self.in_channels}, H, W), got {tuple(image.shape)}")
        x = self.encoder.normalise(image)
        shared = []
        for stage in self.encoder.stages():
            x = stage(x)
            shared.append(x)
        size = tuple(image.shape[-2:])
        preds, attended = {}, {}
        for t in self.task_names:
            att = cast(nn.ModuleList, self.attention[t])
            feats = [att[0](shared[0]) * shared[0]]  # a_1 ⊙ p_1
            for j in range(1, len(shared)):
                prev = self.shared_adapters[j](feats[-1])
                feats.append(att[j](torch.cat([shared[j], prev], dim=1)) * shared[j])  # a_j ⊙ p_j
            attended[t] = feats[-1]
            preds[t] = self.heads[t](feats[-1], feats[0], size)
        return {"preds": preds, "features": shared[-1], "attended": attended}


def build_mtan(model_cfg: ModelConfig, tasks: Sequence[Task], in_channels: int = 3) -> MTAN:
    """An :class:`MTAN` on ``model_cfg.encoder`` with the standard heads."""
    return MTAN(model_cfg, tasks, in_channels)
