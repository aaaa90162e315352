"""The feature-swap robustness ratio of paper §4.4.1 (Table 3, Fig. 3).

Under an appearance change ``x -> x'`` that keeps the semantics, a well-factorised model should move
its residual code ``z_p`` and keep its semantic code ``z_s``. The paper measures

    Δz_s = mean_i ||z_s(x_i) - z_s(x'_i)||²,   Δz_p likewise,   ratio = Δz_p / Δz_s

(paper: 0.4158 / 0.1997 = 2.08 under strong colour jitter, 0.9466 / 0.2889 = 3.28 across domains).

**Normalisation (ours).** Raw squared distances depend on each stream's scale and dimension (``z_s``
is a map with C_s·h·w numbers, ``z_p`` a C_p-vector), so the raw ratio can be moved at will by
rescaling a stream. We divide each stream's squared change by that stream's *mean pairwise squared
distance over the clean batch*, ``D = mean_{i≠j} ||z(x_i) - z(x_j)||² = 2n/(n-1) · total variance``:

    Δ̃z = Δz / D_z,        ratio = Δ̃z_p / Δ̃z_s.

Δ̃ = 1 means "the perturbation moves the code as far as replacing the image by another random image
of the batch"; Δ̃ = 0 means invariance. The normalised ratio is unchanged by any rescaling of either
stream; an identity split (``z_s = z_p``) gives exactly 1, and a ``z_s`` that ignores the change gives
an unbounded ratio (``inf``). Both raw and normalised numbers are returned.

**Like with like.** The ratio compares a model's two streams, so it is only meaningful between models
that have the same two streams. CORE-MTL's ratio is to be read against the dual-stream model trained
*without* the CORE-MTL losses (the ablation's ``ds``: the same architecture, no grounding, no CKA, no
CFA): what separates the two is the losses alone. A vanilla shared-encoder model has no streams; the
diagnostics split it (:mod:`coremtl_lite.diagnostics.streams`): by default its "z_s" is the encoder map
the task heads read and its "z_p" that map's global average pool, so its ratio measures what pooling
does to an appearance change, not a factorisation. :func:`stream_names` says which pair a ratio
compares, and :func:`robustness_numbers` reports it next to the ratios.

Perturbations: :func:`color_jitter` reproduces the released code's strong jitter (brightness,
contrast and saturation factors in [0.6, 1.4], hue shift in [-0.2, 0.2], applied in a random order,
then greyscale with p = 0.5) with torchvision's tensor ops, seeded; :func:`cross_domain_pair` renders
the same ShadedScenes semantic factors in two domains.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import Tensor

from coremtl_lite.diagnostics.streams import StreamFn, flatten_stream, model_output, model_streams

__all__ = [
    "RobustnessResult",
    "color_jitter",
    "cross_domain_pair",
    "mean_pairwise_sqdist",
    "robustness_numbers",
    "robustness_ratio",
    "stream_change",
    "stream_names",
]


def color_jitter(
    images: Tensor,
    seed: int,
    brightness: tuple[float, float] = (0.6, 1.4),
    contrast: tuple[float, float] = (0.6, 1.4),
    saturation: tuple[float, float] = (0.6, 1.4),
    hue: tuple[float, float] = (-0.2, 0.2),
    grayscale_p: float = 0.5,
) -> Tensor:
    """Strong colour jitter of a ``(B, 3, H, W)`` batch in [0, 1], as in the released code (§4.4.1).

    Per image: draw brightness, contrast and saturation factors uniformly in their ranges and a hue
    shift in ``hue``; apply the four ops in a random order (like ``torchvision.transforms.ColorJitter``),
    then convert to greyscale (3 channels) with probability ``grayscale_p``. All draws come from a
    ``torch.Generator`` seeded with ``seed``; the same seed gives the same images.
    """
    from torchvision.transforms.v2 import functional as F

    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"color_jitter expects (B, 3, H, W) images, got {tuple(images.shape)}")
    gen = torch.Generator().manual_seed(int(seed))
    out = []
    for img in images:
        b, c, s = (
            float(lo + (hi - lo) * torch.rand((), generator=gen))
            for lo, hi in (brightness, contrast, saturation)
        )
        h = float(hue[0] + (hue[1] - hue[0]) * torch.rand((), generator=gen))
        order = torch.randperm(4, generator=gen).tolist()
        grey = bool(torch.rand((), generator=gen) < grayscale_p)
        x = img.float().clamp(0, 1)
        for op in order:
            if op == 0:
                x = F.adjust_brightness(x, b)
            elif op == 1:
                x = F.adjust_contrast(x, c)
            elif op == 2:
                x = F.adjust_saturation(x, s)
            else:
                x = F.adjust_hue(x, h)
        if grey:
            x = F.rgb_to_grayscale(x, num_output_channels=3)
        out.append(x.clamp(0, 1))
    return torch.stack(out)


def cross_domain_pair(scenes_a, scenes_b, indices) -> tuple[dict, dict]:
    """The same scenes (semantic factors ``s``) rendered in two domains: two batch dicts.

    ``scenes_a``/``scenes_b`` are ShadedScenes with the same seed, offset and size (then scene ``i``
    has the same ``s`` in both, and only the residual factors differ).
    """
    for key in ("seed", "offset", "size"):
        if getattr(scenes_a, key) != getattr(scenes_b, key):
            raise ValueError(
                f"cross_domain_pair: datasets differ in {key} ({getattr(scenes_a, key)} vs "
                f"{getattr(scenes_b, key)}); the same scene needs the same seed, offset and size"
            )
    return scenes_a.get_batch(indices), scenes_b.get_batch(indices)


def mean_pairwise_sqdist(z: Tensor) -> float:
    """``mean_{i≠j} ||z_i - z_j||²`` over a batch, computed as ``2n/(n-1)`` times the total variance."""
    flat = flatten_stream(z)
    n = flat.shape[0]
    if n < 2:
        raise ValueError(f"need at least 2 samples for the pairwise spread, got {n}")
    total_var = ((flat - flat.mean(0)) ** 2).sum(1).mean()
    return float(2.0 * n / (n - 1) * total_var)


def stream_change(z: Tensor, z_prime: Tensor) -> float:
    """``mean_i ||z_i - z'_i||²``, the raw change of one stream (paper §4.4.1)."""
    if z.shape != z_prime.shape:
        raise ValueError(f"stream shapes differ: {tuple(z.shape)} vs {tuple(z_prime.shape)}")
    return float(((flatten_stream(z) - flatten_stream(z_prime)) ** 2).sum(1).mean())


def _safe_ratio(num: float, den: float) -> float:
    if den > 0:
        return num / den
    return math.inf if num > 0 else math.nan


@dataclass
class RobustnessResult:
    """Raw and normalised stream changes and their ratios (see the module docstring)."""

    delta_s_raw: float  # mean ||z_s(x) - z_s(x')||^2 (paper's Δz_s)
    delta_p_raw: float  # mean ||z_p(x) - z_p(x')||^2 (paper's Δz_p)
    spread_s: float  # mean pairwise squared distance of z_s over the clean batch
    spread_p: float
    delta_s: float  # normalised: delta_s_raw / spread_s
    delta_p: float
    ratio: float  # delta_p / delta_s (scale-free; inf when z_s does not move)
    raw_ratio: float  # delta_p_raw / delta_s_raw (the paper's number, scale-dependent)

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def robustness_ratio(streams: StreamFn, batch: dict, perturbed: dict) -> RobustnessResult:
    """Robustness ratio Δz_p / Δz_s between a clean batch and its perturbed version (Table 3).

    Args:
        streams: a stream function ``batch -> (z_s, z_p)`` (:func:`~coremtl_lite.diagnostics.streams.model_streams`).
        batch: the clean batch dict (needs ``image``); also defines each stream's spread.
        perturbed: the same scenes after the appearance change (same order).
    """
    z_s, z_p = streams(batch)
    z_s2, z_p2 = streams(perturbed)
    ds_raw, dp_raw = stream_change(z_s, z_s2), stream_change(z_p, z_p2)
    spread_s, spread_p = mean_pairwise_sqdist(z_s), mean_pairwise_sqdist(z_p)
    ds, dp = _safe_ratio(ds_raw, spread_s), _safe_ratio(dp_raw, spread_p)
    if math.isnan(ds) or math.isnan(dp):
        raise ValueError(
            "a stream is constant over the clean batch (zero spread): the normalised change is "
            "undefined; use a batch of different images"
        )
    return RobustnessResult(
        ds_raw, dp_raw, spread_s, spread_p, ds, dp, _safe_ratio(dp, ds), _safe_ratio(dp_raw, ds_raw)
    )


def stream_names(model: torch.nn.Module, images: Tensor, vanilla_split: str = "pooled") -> str:
    """What the two "streams" of ``model`` are for the ratio (module docstring, "Like with like"), as
    ``"<z_s> / <z_p>"``, read from its output on ``images`` the way
    :func:`~coremtl_lite.diagnostics.streams.model_streams` reads it: ``z_s / z_p`` for a model that
    outputs both (the dual-stream models, with or without a decoder); for a vanilla model (no streams)
    ``F`` is the encoder map its heads read and ``GAP`` a global average pool."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model_output(model, images[:1].to(next(model.parameters()).device))
    finally:
        model.train(was_training)
    if out.get("z_s") is not None and out.get("z_p") is not None:
        return "z_s / z_p (dual stream)"
    if vanilla_split == "pooled":
        return "F / GAP(F) (vanilla: no streams)"
    return "F[:C/2] / GAP(F[C/2:]) (vanilla: no streams)"


def robustness_numbers(
    model: torch.nn.Module, source, target, indices, seed: int = 0, vanilla_split: str = "pooled"
) -> dict[str, float | str]:
    """The normalised ratio of ``model`` under colour jitter (``intra``) and across domains (``cross``:
    the same scenes rendered in ``source`` and ``target``, :func:`cross_domain_pair`), with
    :func:`stream_names`: ``{"intra", "cross", "streams"}``."""
    clean, shifted = cross_domain_pair(source, target, indices)
    jittered = dict(clean, image=color_jitter(clean["image"], seed=seed))
    streams = model_streams(model, vanilla_split=vanilla_split)
    return {
        "intra": robustness_ratio(streams, clean, jittered).ratio,
        "cross": robustness_ratio(streams, clean, shifted).ratio,
        "streams": stream_names(model, clean["image"], vanilla_split),
    }
