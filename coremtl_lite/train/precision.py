"""Mixed precision for the training loop: which dtype, the autocast context, fp16 gradient scaling.

Mixed precision is a CUDA-only speed setting (``train.amp``); on the CPU every step runs in float32.

* bfloat16 where the GPU supports it: same exponent range as float32, so no loss scaling is needed;
* float16 otherwise, with a :class:`torch.amp.GradScaler`: the gradients are multiplied by a large
  scale before back-propagation (small fp16 gradients would underflow to 0) and divided by it again
  before clipping; a step whose scaled gradients overflowed is skipped and the scale lowered.

The scale is applied to the *gradients*, not to the loss values (:func:`scale_gradients`): the
multi-task methods read the loss values themselves (DWA's ratios, UW's log-variances, ...) and must
see them unscaled. All losses are computed in float32 inside the objective either way.
"""

from __future__ import annotations

import contextlib

import torch
from torch import Tensor

__all__ = ["Precision", "amp_dtype", "scale_gradients"]


def amp_dtype(device: torch.device, enabled: bool) -> torch.dtype | None:
    """The autocast dtype of a run: None (float32) off CUDA or when ``enabled`` is False, else bfloat16
    where supported and float16 otherwise."""
    if not enabled or device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


class _ScaleGrad(torch.autograd.Function):
    """Identity forward, gradient times ``scale`` backward."""

    @staticmethod
    def forward(ctx, x: Tensor, scale: float) -> Tensor:  # noqa: D401
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: Tensor):
        return grad * ctx.scale, None


def scale_gradients(x: Tensor | None, scale: float) -> Tensor | None:
    """``x`` unchanged in value, its gradient multiplied by ``scale`` on the way back (None stays None)."""
    return None if x is None else _ScaleGrad.apply(x, scale)


class Precision:
    """The mixed-precision set-up of one run: ``dtype`` (None: float32) and ``scaler`` (float16 only).

    Args:
        device: the run's device.
        enabled: ``train.amp``.
    """

    def __init__(self, device: torch.device, enabled: bool):
        self.device_type = device.type
        self.dtype = amp_dtype(device, enabled)
        self.scaler: torch.amp.GradScaler | None = (
            torch.amp.GradScaler("cuda") if self.dtype == torch.float16 else None
        )

    def __repr__(self) -> str:
        return f"Precision(dtype={self.dtype}, scaler={self.scaler is not None})"

    def autocast(self) -> contextlib.AbstractContextManager:
        """The autocast context of the forward pass (a no-op in float32)."""
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device_type, dtype=self.dtype)

    def scale_losses(
        self, task_losses: dict[str, Tensor], extra: Tensor | None
    ) -> tuple[dict[str, Tensor], Tensor | None]:
        """The losses with their gradients scaled by the scaler's current scale (unchanged without a scaler)."""
        if self.scaler is None:
            return task_losses, extra
        scale = float(self.scaler.get_scale())
        return {k: _ScaleGrad.apply(v, scale) for k, v in task_losses.items()}, scale_gradients(extra, scale)

    def unscale(self, optimizer: torch.optim.Optimizer) -> None:
        """Divide the gradients by the scale (before clipping); a no-op without a scaler."""
        if self.scaler is not None:
            self.scaler.unscale_(optimizer)

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        """The optimiser step; with a scaler it is skipped when the scaled gradients overflowed, and the
        scale is updated."""
        if self.scaler is None:
            optimizer.step()
            return
        self.scaler.step(optimizer)
        self.scaler.update()
