"""The two streams of a model, read the same way for every diagnostic (paper §3.1).

A *stream function* maps a batch dict (at least ``image``) to ``(z_s, z_p)``. For CORE-MTL's
dual-stream model these are the model's own outputs: the semantic map ``z_s`` ``(B, C_s, h, w)``
and the residual vector ``z_p`` ``(B, C_p)``. A vanilla shared-encoder model has no such split, so
to compare it on the same footing (paper Table 3 reports CORE-MTL only) we *split it the same way*:

* ``"pooled"`` (default): ``z_s`` = the encoder map ``F`` the task heads read, ``z_p`` = ``GAP(F)``,
  its global-average-pooled summary -- the same structural shapes as CORE-MTL (a map the heads read,
  and a pooled vector), without any training pressure to separate them;
* ``"channels"``: ``z_s`` = the first half of the channels of ``F`` (a map), ``z_p`` = ``GAP`` of the
  other half -- an arbitrary split of one entangled representation.

Any callable ``batch -> (z_s, z_p)`` works with the diagnostics, which is how the unit tests build
models with known answers (e.g. a "model" whose ``z_s`` is the depth label, blind to the residual
factors by construction).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

StreamFn = Callable[[dict], tuple[Tensor, Tensor]]

__all__ = ["StreamFn", "VANILLA_SPLITS", "flatten_stream", "is_dual_stream", "model_streams", "model_output"]

VANILLA_SPLITS = ("pooled", "channels")


def model_output(model: nn.Module, images: Tensor) -> dict:
    """``model(images)`` checked against the model contract (a dict with ``preds`` and ``features``)."""
    out = model(images)
    if not isinstance(out, dict) or "features" not in out:
        got = sorted(out) if isinstance(out, dict) else type(out).__name__
        raise TypeError(
            f"model(image) must return a dict with 'preds' and 'features' (CONTRIBUTING.md); got {got}"
        )
    return out


def is_dual_stream(model: nn.Module) -> bool:
    """True for models with a residual stream and a decoder (CORE-MTL), i.e. ``model.decode`` exists."""
    return callable(getattr(model, "decode", None))


def model_streams(model: nn.Module, vanilla_split: str = "pooled", pool_semantic: bool = False) -> StreamFn:
    """A stream function for ``model`` (see the module docstring).

    Args:
        model: a coremtl_lite model (``model(image)`` -> dict with ``features`` and, for dual-stream
            models, ``z_s`` and ``z_p``).
        vanilla_split: how to split a model without ``z_p``: ``"pooled"`` or ``"channels"``.
        pool_semantic: also global-average-pool ``z_s`` (compares two vectors instead of a map and a
            vector; isolates the effect of pooling from the effect of the factorisation).

    The model is run in eval mode without gradients; its train/eval state is restored afterwards.
    """
    if vanilla_split not in VANILLA_SPLITS:
        raise ValueError(f"vanilla_split={vanilla_split!r}; choose one of {VANILLA_SPLITS}")

    def fn(batch: dict) -> tuple[Tensor, Tensor]:
        if "image" not in batch:
            raise KeyError(f"stream function needs batch['image']; got keys {sorted(batch)}")
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                device = next(model.parameters()).device
                out = model_output(model, batch["image"].to(device))
        finally:
            model.train(was_training)
        if out.get("z_p") is not None and out.get("z_s") is not None:
            z_s, z_p = out["z_s"], out["z_p"]
        else:
            feat = out["features"]
            if feat.dim() != 4:
                raise ValueError(f"vanilla split needs a (B, C, h, w) feature map, got {tuple(feat.shape)}")
            if vanilla_split == "pooled":
                z_s, z_p = feat, feat.mean(dim=(2, 3))
            else:
                half = feat.shape[1] // 2
                if half == 0:
                    raise ValueError(f"channels split needs >= 2 channels, got {feat.shape[1]}")
                z_s, z_p = feat[:, :half], feat[:, half:].mean(dim=(2, 3))
        if pool_semantic and z_s.dim() == 4:
            z_s = z_s.mean(dim=(2, 3))
        return z_s.float().cpu(), z_p.float().cpu()

    return fn


def flatten_stream(z: Tensor) -> Tensor:
    """``(B, ...)`` -> ``(B, D)`` float64 (a map's channels and positions become one vector)."""
    if z.dim() < 1:
        raise ValueError(f"a stream needs a batch dimension, got shape {tuple(z.shape)}")
    return z.reshape(z.shape[0], -1).double()
