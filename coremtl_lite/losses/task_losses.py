"""The per-task supervised losses L_t of the total objective (paper Eq. 16), LibMTL conventions (paper §4.1).

* segmentation: cross-entropy over pixels, label ``-1`` = void (ignored);
* depth: L1 over valid pixels (ground truth != 0);
* normal: 1 - cosine between the (re-normalised) prediction and the unit ground truth over valid
  pixels (ground truth norm > 0);
* attributes: binary cross-entropy with logits, averaged over attributes and samples;
* classification: cross-entropy.

Every loss is computed in float32 (AMP-safe) and returns a scalar. A batch with no valid pixel gives
a loss of exactly 0 that is still connected to the prediction (zero gradient, never NaN).

Equation numbers are the CORE-MTL paper's; docs/method.md states each one (label ``eq-N``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "attributes_loss",
    "classification_loss",
    "depth_loss",
    "normal_loss",
    "segmentation_loss",
    "LOSSES",
]


def _check(pred: Tensor, target: Tensor, fn: str, pred_dims: int) -> None:
    if pred.dim() != pred_dims:
        raise ValueError(f"{fn}: prediction must have {pred_dims} dims, got shape {tuple(pred.shape)}")
    if pred.shape[0] != target.shape[0]:
        raise ValueError(
            f"{fn}: batch sizes differ, prediction {tuple(pred.shape)} vs target {tuple(target.shape)}"
        )


def segmentation_loss(pred: Tensor, target: Tensor) -> Tensor:
    """Cross-entropy of logits ``pred`` (B, K, H, W) against labels ``target`` (B, H, W), ``-1`` = void."""
    _check(pred, target, "segmentation_loss", 4)
    if target.shape != (pred.shape[0], *pred.shape[2:]):
        raise ValueError(
            f"segmentation_loss: target must be (B, H, W) = {(pred.shape[0], *pred.shape[2:])}, "
            f"got {tuple(target.shape)}"
        )
    target = target.long()
    valid = target >= 0
    if not bool(valid.any()):
        return pred.float().sum() * 0.0
    return F.cross_entropy(pred.float(), target, ignore_index=-1)


def depth_loss(pred: Tensor, target: Tensor) -> Tensor:
    """Masked L1 ``mean |d_hat - d|`` over pixels with ground truth ``d != 0`` (LibMTL DepthLoss)."""
    _check(pred, target, "depth_loss", 4)
    if pred.shape != target.shape:
        raise ValueError(
            f"depth_loss: prediction {tuple(pred.shape)} and target {tuple(target.shape)} differ"
        )
    mask = (target != 0).float()
    count = mask.sum()
    err = ((pred.float() - target.float()).abs() * mask).sum()
    return err / count.clamp_min(1.0)


def normal_loss(pred: Tensor, target: Tensor) -> Tensor:
    """``1 - mean cos(n_hat, n)`` over pixels whose ground-truth normal is non-zero (LibMTL NormalLoss)."""
    _check(pred, target, "normal_loss", 4)
    if pred.shape != target.shape or pred.shape[1] != 3:
        raise ValueError(
            f"normal_loss: expects (B, 3, H, W) prediction and target, got {tuple(pred.shape)} "
            f"and {tuple(target.shape)}"
        )
    pred = pred.float()
    pred = pred * torch.rsqrt(pred.pow(2).sum(dim=1, keepdim=True).clamp_min(1e-12))
    target = target.float()
    mask = (target.abs().sum(dim=1) > 0).float()  # (B, H, W)
    count = mask.sum()
    cos = (pred * target).sum(dim=1)
    return (mask - cos * mask).sum() / count.clamp_min(1.0)


def attributes_loss(pred: Tensor, target: Tensor) -> Tensor:
    """Binary cross-entropy with logits, ``pred`` (B, A) against ``target`` (B, A) in {0, 1}."""
    _check(pred, target, "attributes_loss", 2)
    if pred.shape != target.shape:
        raise ValueError(
            f"attributes_loss: prediction {tuple(pred.shape)} and target {tuple(target.shape)} differ"
        )
    return F.binary_cross_entropy_with_logits(pred.float(), target.float())


def classification_loss(pred: Tensor, target: Tensor) -> Tensor:
    """Cross-entropy of logits ``pred`` (B, K) against class indices ``target`` (B,)."""
    _check(pred, target, "classification_loss", 2)
    if target.shape != (pred.shape[0],):
        raise ValueError(
            f"classification_loss: target must be (B,) = ({pred.shape[0]},), got {tuple(target.shape)}"
        )
    return F.cross_entropy(pred.float(), target.long())


#: task kind -> loss function
LOSSES = {
    "segmentation": segmentation_loss,
    "depth": depth_loss,
    "normal": normal_loss,
    "attributes": attributes_loss,
    "classification": classification_loss,
}
