"""The ShadedScenes dataset: sampling the factors of scene ``i``, rendering, interventions."""

from __future__ import annotations

from typing import Any

import torch

from coremtl_lite.data.scenes import appearance, geometry, priors
from coremtl_lite.data.scenes.appearance import RESIDUAL_KEYS, lighting_sh
from coremtl_lite.data.scenes.geometry import CLASS_NAMES, NUM_CLASSES


class ShadedScenes:
    """Procedural scenes with true semantic and residual factors (:mod:`coremtl_lite.data.scenes`).

    Args:
        domain: a domain name of :func:`~coremtl_lite.data.scenes.priors.parse_domain`: ``source``,
            ``target``, ``shift:<s>``, ``rho:<r>``, ``only:<colour|texture|lighting|camera>``,
            ``corrupt:<name>:<1-5>``, ``colored`` or ``colored-permuted``.
        size: image side (H = W = size).
        length: number of scenes.
        seed: dataset seed; scene ``i`` is a pure function of ``(seed, offset + i, domain, rho, severity)``.
        offset: index offset (disjoint splits use disjoint index ranges).
        with_factors: include the ``factors`` entry in samples (default True).
        rho: the spurious-correlation strength of ``source`` and the domains built on it (``data.rho``).
        severity: the severity of ``target`` (``data.severity``).

    Scenes with the same ``(seed, index)`` share their semantic factors across domains, so the
    source and target versions of a scene are counterfactual pairs (only ``r`` differs).
    """

    task_info: dict[str, dict[str, Any]] = {
        "segmentation": {"kind": "segmentation", "num_classes": NUM_CLASSES},
        "depth": {"kind": "depth"},
        "normal": {"kind": "normal"},
    }

    def __init__(
        self,
        domain: str = "source",
        size: int = 64,
        length: int = 1024,
        seed: int = 0,
        offset: int = 0,
        with_factors: bool = True,
        rho: float = priors.DEFAULT_RHO,
        severity: float = priors.DEFAULT_SEVERITY,
    ):
        self.spec = priors.parse_domain(domain, rho, severity)
        if size < 8:
            raise ValueError(f"ShadedScenes size must be >= 8, got {size}")
        if length < 0 or offset < 0 or seed < 0:
            raise ValueError(
                f"ShadedScenes length, offset and seed must be >= 0, got {length}, {offset}, {seed}"
            )
        self.domain, self.size, self.length = domain, int(size), int(length)
        self.seed, self.offset = int(seed), int(offset)
        self.rho, self.severity = float(rho), float(severity)
        self.with_factors = with_factors
        self.class_names = CLASS_NAMES
        self.task_info = dict(type(self).task_info)

    def __len__(self) -> int:
        return self.length

    def __repr__(self) -> str:
        # the constructor's arguments, then the law this domain actually draws from: ``rho`` and
        # ``severity`` are the dataset's dials, which a domain may override (``target`` draws at rho 0)
        spec = self.spec
        shifts = ", ".join(f"{g} {s:g}" for g, s in zip(priors.GROUPS, spec.severity))
        return (
            f"{type(self).__name__}(domain={self.domain!r}, size={self.size}, length={self.length}, "
            f"seed={self.seed}, offset={self.offset}, rho={self.rho}, severity={self.severity}) "
            f"[draws: rho {spec.rho:g} (class-keyed colour kept with p {spec.rho_effective:g}); "
            f"shift {shifts}]"
        )

    # ------------------------------------------------------------------------- factor sampling
    def _global_indices(self, indices) -> torch.Tensor:
        idx = torch.as_tensor(indices, dtype=torch.int64).reshape(-1)
        if idx.numel() and (idx.min() < 0 or idx.max() >= self.length):
            raise IndexError(f"index out of range for {self!r}: {idx.tolist()[:8]}")
        return idx + self.offset

    def sample_semantic(self, indices) -> dict[str, torch.Tensor]:
        """Semantic factors s of the scenes (independent of the domain: the law of s is fixed, §2)."""
        return geometry.sample_semantic(self.seed, self._global_indices(indices))

    def sample_named_residual(
        self, indices, semantic: dict[str, torch.Tensor] | None = None
    ) -> dict[str, torch.Tensor]:
        """The named residual factors (hue, saturation, ..., light elevation) of the scenes under this
        dataset's domain: :func:`~coremtl_lite.data.scenes.priors.draw_residual_factors`."""
        semantic = self.sample_semantic(indices) if semantic is None else semantic
        draw = priors.draw_colored_factors if self.spec.colored else priors.draw_residual_factors
        return draw(self.seed, self._global_indices(indices), semantic, self.spec)

    def sample_residual(
        self, indices, semantic: dict[str, torch.Tensor] | None = None
    ) -> dict[str, torch.Tensor]:
        """Residual factors r of the scenes under this dataset's domain, as the renderer takes them."""
        return priors.residual_from_factors(self.sample_named_residual(indices, semantic))

    def sample_factors(self, indices) -> dict[str, dict[str, torch.Tensor]]:
        """``{"semantic": s, "residual": r}`` for the scenes ``indices`` (batched tensors)."""
        semantic = self.sample_semantic(indices)
        return {"semantic": semantic, "residual": self.sample_residual(indices, semantic)}

    # -------------------------------------------------------------------------------- rendering
    def geometry(self, semantic: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Labels from the semantic factors alone (:func:`~coremtl_lite.data.scenes.geometry.geometry`)."""
        return geometry.geometry(semantic, self.size)

    def shade(
        self,
        geometry: dict[str, torch.Tensor],
        residual: dict[str, torch.Tensor],
        apply_corruption: bool = True,
        keys: tuple[str, ...] = ("image", "albedo", "shading", "sh"),
    ) -> dict[str, torch.Tensor]:
        """Image formation from geometry and residual factors (paper Eq. 13-14), plus this domain's
        corruption when ``apply_corruption`` (:func:`~coremtl_lite.data.scenes.appearance.shade`)."""
        corruption = self.spec.corruption if apply_corruption else None
        return appearance.shade(geometry, residual, corruption, keys)

    def render(self, semantic: dict[str, torch.Tensor], residual: dict[str, torch.Tensor]) -> dict[str, Any]:
        """Render any combination of factors: the SCM's intervention ``do(s, r)`` (batched dicts).

        Returns the sample dict (batched): ``image``, ``segmentation``, ``depth``, ``normal`` and
        ``factors``. The labels depend on ``semantic`` only, so changing ``residual`` leaves them
        bit-identical. ``residual["sh"]`` is derived: it is recomputed from the lighting factors.
        """
        geo = self.geometry(semantic)
        shaded = self.shade(geo, residual, keys=("image", "sh"))
        out: dict[str, Any] = {
            "image": shaded["image"],
            "segmentation": geo["segmentation"],
            "depth": geo["depth"],
            "normal": geo["normal"],
        }
        if self.with_factors:
            res = dict(residual)
            res["sh"] = shaded["sh"]
            out["factors"] = {"semantic": dict(semantic), "residual": res}
        return out

    def get_batch(self, indices) -> dict[str, Any]:
        """The collated sample dict of scenes ``indices``, rendered at once."""
        return self.render(**self.sample_factors(indices))

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not isinstance(index, int):
            index = int(index)
        if index < 0:
            index += self.length
        return _unbatch(self.get_batch([index]), 0)

    def intervene(self, residual: dict[str, torch.Tensor], **changes: Any) -> dict[str, torch.Tensor]:
        """A copy of ``residual`` with some factors set (``do(r_k = v)``), keeping ``sh`` consistent.

        Besides the residual keys, accepts ``light_azimuth``/``light_elevation`` (radians, both
        needed together) and ``hue_shift`` (rotates every surface's albedo hue by this fraction).
        """
        new = {k: v.clone() for k, v in residual.items()}
        if "light_azimuth" in changes or "light_elevation" in changes:
            az, el = changes.pop("light_azimuth"), changes.pop("light_elevation")
            b = new["light_dir"].shape[0]
            new["light_dir"] = appearance.light_direction(
                torch.as_tensor(az, dtype=torch.float32).expand(b),
                torch.as_tensor(el, dtype=torch.float32).expand(b),
            )
        if "hue_shift" in changes:
            new["albedo"] = appearance.shift_hue(new["albedo"], float(changes.pop("hue_shift")))
        for k, v in changes.items():
            if k not in RESIDUAL_KEYS:
                raise KeyError(f"intervene: unknown residual factor {k!r}; valid: {RESIDUAL_KEYS}")
            new[k] = torch.as_tensor(v, dtype=new[k].dtype).expand_as(new[k]).clone()
        new["sh"] = lighting_sh(new)
        return new


def _unbatch(batch: Any, i: int) -> Any:
    """Item ``i`` of a collated (nested) dict of tensors."""
    if isinstance(batch, dict):
        return {k: _unbatch(v, i) for k, v in batch.items()}
    return batch[i]


def rerender_intervention(
    scenes: ShadedScenes,
    index: int,
    light_azimuth: float,
    light_elevation: float,
    light_temperature: float,
    hue_shift: float = 0.0,
    exposure: float | None = None,
) -> dict[str, Any]:
    """Re-render scene ``index`` under ``do(r = r')`` (the data-tour widget's logic).

    Returns ``original`` and ``intervened`` sample dicts (batch of one) and ``label_change``, the max
    absolute change of segmentation, depth and normal (0.0 each: labels are functions of s only) and
    ``image_change``, the mean absolute pixel change.
    """
    factors = scenes.sample_factors([index])
    original = scenes.render(**factors)
    changes: dict[str, Any] = {
        "light_azimuth": light_azimuth,
        "light_elevation": light_elevation,
        "light_temperature": light_temperature,
        "hue_shift": hue_shift,
    }
    if exposure is not None:
        changes["exposure"] = exposure
    residual = scenes.intervene(factors["residual"], **changes)
    new = scenes.render(factors["semantic"], residual)
    label_change = {
        k: float((new[k].float() - original[k].float()).abs().max())
        for k in ("segmentation", "depth", "normal")
    }
    return {
        "original": original,
        "intervened": new,
        "label_change": label_change,
        "image_change": float((new["image"] - original["image"]).abs().mean()),
    }
