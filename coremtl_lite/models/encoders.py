"""Shared encoders: the CPU-friendly ``lite`` CNN and torchvision ResNets (paper Appendix E).

Every encoder maps an sRGB image (B, 3, H, W) in [0, 1] to ``(low, F)``: a low-level feature map at
stride 4 (the DeepLab skip of the dense heads) and the top feature map ``F`` at ``output_stride``,
and exposes ``out_channels``, ``low_channels``, ``output_stride`` and ``stages()`` (the ordered stage
modules, for MTAN's per-stage attention).

* ``lite`` (default): stem conv 3x3/2 -> conv 3x3/2 (stride 4, the low-level output) -> a residual
  depthwise-separable block -> a depthwise-separable block /2 -> a dilated residual depthwise-separable
  block (stride 8). About 0.01 GFLOP per 64x64 image; designed for the 2-core CPU benchmark
  (``benchmarks/bench_model.py``).
* ``resnet50``: torchvision ResNet-50 with ``replace_stride_with_dilation=[False, True, True]``
  (output stride 8, F has 2048 channels), for the dense benchmarks (Appendix E).
* ``resnet18``: torchvision ResNet-18 without dilation (output stride 32, 512 channels), for the
  attribute benchmark.

ImageNet weights (``pretrained=True``) are loaded from the local torch hub cache or downloaded; when
neither works (offline) one clear message is printed and the network keeps its random init.
"""

from __future__ import annotations

import sys

import torch
from torch import Tensor, nn

from coremtl_lite.config import ModelConfig
from coremtl_lite.models.blocks import ConvBNReLU, DSConv

__all__ = ["Encoder", "LiteEncoder", "ResNetEncoder", "build_encoder", "load_imagenet_state"]

_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)
_WARNED: set[str] = set()


class Encoder(nn.Module):
    """What every encoder exposes (module doc): channel counts, output stride, ``stages()`` and
    ``normalise`` (the input normalisation the first stage expects; the identity by default)."""

    out_channels: int
    low_channels: int
    output_stride: int

    def stages(self) -> list[nn.Module]:  # pragma: no cover - overridden
        raise NotImplementedError  # abstract: every encoder lists its stages

    def normalise(self, x: Tensor) -> Tensor:
        """The input as the first stage expects it (identity here)."""
        return x


class LiteEncoder(Encoder):
    """A small CNN at output stride 8 (see module doc). ``width`` is the stride-4 channel count; F has
    ``2 * width`` channels."""

    def __init__(self, width: int = 32, in_channels: int = 3):
        super().__init__()
        w = int(width)
        half = max(w // 2, 8)
        self.stem = ConvBNReLU(in_channels, half, 3, stride=2)  # stride 2
        self.stage1 = nn.Sequential(ConvBNReLU(half, w, 3, stride=2), DSConv(w, w, residual=True))  # stride 4
        self.stage2 = DSConv(w, 2 * w, stride=2)  # stride 8
        self.stage3 = DSConv(2 * w, 2 * w, dilation=2, residual=True)  # stride 8, wider receptive field
        self.out_channels, self.low_channels, self.output_stride = 2 * w, w, 8

    def stages(self) -> list[nn.Module]:
        """The stage modules in order; the output of the first is the low-level (stride-4) map."""
        return [nn.Sequential(self.stem, self.stage1), self.stage2, self.stage3]

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        low = self.stage1(self.stem(x))
        return low, self.stage3(self.stage2(low))


def load_imagenet_state(arch: str) -> dict[str, Tensor]:
    """The torchvision ImageNet state dict of ``arch`` (from the hub cache, else downloaded; raises offline)."""
    import torchvision

    weights = {
        "resnet50": torchvision.models.ResNet50_Weights.IMAGENET1K_V1,
        "resnet18": torchvision.models.ResNet18_Weights.IMAGENET1K_V1,
    }[arch]
    return weights.get_state_dict(progress=False)


class ResNetEncoder(Encoder):
    """torchvision ResNet-50 (dilated, output stride 8) or ResNet-18 (output stride 32) (Appendix E).

    The input is normalised with the ImageNet mean and std inside the module. ``low`` = layer1 (stride 4).
    """

    mean: Tensor  # registered buffers: ImageNet mean and std, (1, 3, 1, 1)
    std: Tensor

    def __init__(self, arch: str = "resnet50", pretrained: bool = True, in_channels: int = 3):
        super().__init__()
        import torchvision

        if arch == "resnet50":
            net = torchvision.models.resnet50(weights=None, replace_stride_with_dilation=[False, True, True])
            self.out_channels, self.low_channels, self.output_stride = 2048, 256, 8
        elif arch == "resnet18":
            net = torchvision.models.resnet18(weights=None)
            self.out_channels, self.low_channels, self.output_stride = 512, 64, 32
        else:
            raise ValueError(f"ResNetEncoder: unknown arch {arch!r}; choose resnet50 or resnet18")
        self.arch = arch
        self.pretrained_loaded = False
        if pretrained:
            try:
                net.load_state_dict(load_imagenet_state(arch))
                self.pretrained_loaded = True
            except Exception as err:  # offline (URLError), corrupt cache, ...: random init, said once
                if arch not in _WARNED:
                    _WARNED.add(arch)
                    print(
                        f"coremtl_lite: ImageNet weights for {arch} are not in the torch cache and could not be "
                        f"downloaded ({type(err).__name__}: {err}); using a randomly initialised {arch}.",
                        file=sys.stderr,
                    )
        if in_channels != 3:
            net.conv1 = nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False)
        self.stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4
        self.register_buffer("mean", torch.tensor(_IMAGENET_MEAN)[None, :, None, None], persistent=False)
        self.register_buffer("std", torch.tensor(_IMAGENET_STD)[None, :, None, None], persistent=False)

    def stages(self) -> list[nn.Module]:
        """The stage modules in order; the output of the first is the low-level (stride-4) map."""
        return [nn.Sequential(self.stem, self.layer1), self.layer2, self.layer3, self.layer4]

    def normalise(self, x: Tensor) -> Tensor:
        """ImageNet normalisation of an sRGB image in [0, 1] (3 channels only)."""
        return (x - self.mean) / self.std if x.shape[1] == 3 else x

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        low = self.layer1(self.stem(self.normalise(x)))
        return low, self.layer4(self.layer3(self.layer2(low)))


def build_encoder(model_cfg: ModelConfig, in_channels: int = 3) -> Encoder:
    """The encoder named by ``model_cfg.encoder`` (lite | resnet50 | resnet18)."""
    name = model_cfg.encoder
    if name == "lite":
        return LiteEncoder(model_cfg.width, in_channels)
    if name in ("resnet50", "resnet18"):
        return ResNetEncoder(name, pretrained=model_cfg.pretrained, in_channels=in_channels)
    raise ValueError(f"model.encoder={name!r} is not one of lite, resnet50, resnet18")
