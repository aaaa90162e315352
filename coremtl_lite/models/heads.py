"""Task heads (paper Appendix E; docs/method.md, "The model").

* :class:`DenseHead` -- DeepLabV3-style: ASPP over the head input (z_s in CORE-MTL), bilinear upsampling
  to the low-level (stride-4) resolution, concatenation with a 1x1 projection of the encoder's
  low-level feature, a 3x3 conv, a 1x1 classifier, bilinear upsampling to the input resolution.
  ``lite=True`` (the lite encoder): a small ASPP (1x1, one depthwise-separable dilated branch, image
  pooling) and a depthwise-separable 3x3 refinement, predicting at stride 4 before the final upsampling.
  ``lite=False`` (ResNets): ASPP rates 12/24/36 with full 3x3 convs, 48-channel skip projection.
  Normal heads L2-normalise their output (after upsampling, so the output is unit-norm per pixel).
* :class:`GlobalHead` -- attributes: GAP -> FC(256) -> BN -> ReLU -> Dropout(0.5) -> FC(#attributes)
  (Appendix E, CelebA). Classification uses the same MLP on a 2 x 2 average-pooled grid instead of the
  global pool, so that a task tied to one image region (DigitPairs' left / right digit) can see where
  things are.
"""

from __future__ import annotations

from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from coremtl_lite.models.blocks import ConvBNReLU, DSConv, channels_first, l2_normalise, upsample_to

__all__ = ["ASPP", "DenseHead", "GlobalHead", "build_heads", "init_heads_from_data"]


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling (Chen et al. 2017): parallel 1x1, dilated 3x3 and image-pool branches.

    ``lite=True`` uses depthwise-separable dilated branches.
    """

    def __init__(self, cin: int, cout: int, rates: tuple[int, ...], lite: bool):
        super().__init__()
        self.branches = nn.ModuleList([ConvBNReLU(cin, cout, 1)])
        for r in rates:
            if lite:
                self.branches.append(
                    nn.Sequential(ConvBNReLU(cin, cin, 3, dilation=r, groups=cin), ConvBNReLU(cin, cout, 1))
                )
            else:
                self.branches.append(ConvBNReLU(cin, cout, 3, dilation=r))
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(cin, cout, 1), nn.ReLU(inplace=True))
        self.project = ConvBNReLU(cout * (len(rates) + 2), cout, 1)

    def forward(self, x: Tensor) -> Tensor:
        outs = [b(x) for b in self.branches]
        outs.append(self.pool(x).expand(-1, -1, x.shape[2], x.shape[3]))
        return self.project(torch.cat(outs, dim=1))


class DenseHead(nn.Module):
    """DeepLabV3-style dense head (see module doc). ``forward(x, low, size) -> (B, out, *size)``."""

    def __init__(
        self,
        cin: int,
        low_channels: int,
        out_channels: int,
        channels: int,
        kind: str,
        lite: bool = True,
        low_level_skip: bool = True,
    ):
        super().__init__()
        self.kind = kind
        rates = (2,) if lite else (12, 24, 36)
        self.aspp = ASPP(cin, channels, rates, lite)
        skip = (max(channels // 2, 8) if lite else 48) if low_level_skip else 0
        self.low_proj = ConvBNReLU(low_channels, skip, 1) if skip else None
        self.refine = DSConv(channels + skip, channels) if lite else ConvBNReLU(channels + skip, channels, 3)
        self.classifier = nn.Conv2d(channels, out_channels, 1)

    def forward(self, x: Tensor, low: Tensor | None, size: tuple[int, int]) -> Tensor:
        y = self.aspp(x)
        if self.low_proj is not None:
            if low is None:
                raise ValueError("DenseHead with a low-level skip needs the encoder's low-level map")
            y = torch.cat([upsample_to(y, low.shape[-2:]), self.low_proj(low)], dim=1)
        elif low is not None:
            y = upsample_to(y, low.shape[-2:])
        y = upsample_to(self.classifier(self.refine(y)), size)
        if self.kind == "normal":
            y = l2_normalise(y, dim=1)  # unit normals (Appendix E)
        return y


class GlobalHead(nn.Module):
    """Image-level head: pool -> FC(hidden) -> BN -> ReLU -> Dropout(0.5) -> FC(out) (Appendix E, CelebA)."""

    def __init__(
        self,
        cin: int,
        out_channels: int,
        hidden: int = 256,
        grid: tuple[int, int] = (1, 1),
        dropout: float = 0.5,
    ):
        super().__init__()
        self.grid = (int(grid[0]), int(grid[1]))
        self.mlp = nn.Sequential(
            nn.Linear(cin * self.grid[0] * self.grid[1], hidden),
            nn.BatchNorm1d(hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(hidden, out_channels),
        )

    def forward(self, x: Tensor, low: Tensor | None = None, size: tuple[int, int] | None = None) -> Tensor:
        return self.mlp(channels_first(F.adaptive_avg_pool2d(x, self.grid)).flatten(1))


def build_heads(
    tasks, cin: int, low_channels: int, channels: int, lite: bool, low_level_skip: bool = True
) -> nn.ModuleDict:
    """One head per task: :class:`DenseHead` for dense kinds, :class:`GlobalHead` otherwise."""
    heads = nn.ModuleDict()
    for t in tasks:
        if t.kind in ("segmentation", "depth", "normal"):
            heads[t.name] = DenseHead(cin, low_channels, t.channels, channels, t.kind, lite, low_level_skip)
        elif t.kind == "attributes":
            heads[t.name] = GlobalHead(cin, t.channels)
        elif t.kind == "classification":
            heads[t.name] = GlobalHead(cin, t.channels, grid=(2, 2))
        else:
            raise ValueError(f"no head for task {t.name!r} of kind {t.kind!r}")
    return heads


@torch.no_grad()
def init_heads_from_data(heads: nn.ModuleDict, kinds: dict[str, str], stats: dict[str, Tensor]) -> None:
    """Start each head's output where the training data is (the output layer's bias), so that a short
    run measures how well a model learns the task, not how fast it learns an offset.

    ``stats`` are :func:`coremtl_lite.models.trivial.task_statistics` of the training split: a depth head
    starts at the mean training depth, a normal head at the mean normal, segmentation and classification
    logits at the log class frequencies (the prior), attribute logits at the log-odds of each attribute.
    The output layer's weights are scaled by 0.1 so that the start is close to that constant. Heads that
    are not :class:`DenseHead` / :class:`GlobalHead` (or tasks without statistics) are left alone.
    """
    for name, head in heads.items():
        if name not in stats or name not in kinds:
            continue
        layer: nn.Conv2d | nn.Linear
        if isinstance(head, DenseHead):
            layer = head.classifier
        elif isinstance(head, GlobalHead):
            layer = cast(nn.Linear, head.mlp[-1])
        else:
            continue
        if layer.bias is None:
            raise ValueError(
                f"init_heads_from_data: the output layer of task {name!r} has no bias to initialise"
            )
        kind, stat = kinds[name], stats[name].to(layer.bias.device, layer.bias.dtype)
        if kind in ("segmentation", "classification"):
            bias = stat.clamp_min(1e-4).log()
        elif kind == "attributes":
            p = stat.clamp(1e-4, 1 - 1e-4)
            bias = (p / (1 - p)).log()
        else:  # depth (1,), normal (3,)
            bias = stat.reshape(-1)
        if bias.shape != layer.bias.shape:
            raise ValueError(
                f"init_heads_from_data: task {name!r} has statistics of shape {tuple(bias.shape)} "
                f"but its output layer has {tuple(layer.bias.shape)} outputs"
            )
        layer.weight.mul_(0.1)
        layer.bias.copy_(bias)
