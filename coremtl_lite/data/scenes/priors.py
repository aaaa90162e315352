"""The residual priors of ShadedScenes: one table of named factor ranges, two dials, the domains.

**The table.** Every continuous residual factor has a uniform law on a range in the *source* and
another in the *target* (:data:`FACTORS`); the texture kind is categorical (stripes in the source,
checker or blotches in the target). Factors come in four groups -- ``colour``, ``texture``,
``lighting``, ``camera`` -- which the per-factor domains ``only:<group>`` shift one at a time.

**The dials** are the quantities of paper §2 (Assumption 2.2: residual factors independent of the
semantics; a shift that changes only their law):

* ``rho`` in [0, 1], the spurious-correlation strength: every surface keeps its *class-keyed*
  colour (hue by class, fixed saturation and value, :data:`KEYED_COLOUR`) with probability ``rho``,
  otherwise its colour is drawn from the class-independent law (uniform hue, the table's saturation
  and value). ``rho = 0`` makes the residuals independent of the semantics, ``rho = 1`` makes colour
  a perfect shortcut to the label. The light's azimuth also follows the object layout in the source
  (``light_azimuth_offset`` is the azimuth minus the direction of the objects' centroid); the
  target's offset is uniform on the circle, i.e. independent of the layout.
* ``severity`` in [0, 1], the shift: each factor's range is interpolated linearly from its source
  range (``severity = 0``, bit for bit the source) to its target range (``severity = 1``); a surface
  takes a target texture kind with probability ``severity``; and the class-keying fades with the
  colour group's severity, ``rho_eff = (1 - severity) * rho``.

The labels and the law of the semantic factors never change (:mod:`.geometry`); a domain only
changes how the residual factors are drawn, from the same random numbers for the same scene.

**Domain names** (:func:`parse_domain`):

* ``source``: severity 0 at the dataset's ``rho`` (``data.rho``; default :data:`DEFAULT_RHO`);
* ``target``: ``rho = 0`` at the dataset's ``severity`` (``data.severity``; default :data:`DEFAULT_SEVERITY`);
* ``shift:<s>``: every group at severity ``s`` (``shift:0`` is ``source``, ``shift:1`` the far end);
* ``rho:<r>``: the source with ``rho = r`` (train on ``rho:0`` for a model without the shortcut);
* ``only:<colour|texture|lighting|camera>``: the source with one group at severity 1;
* ``corrupt:<contrast|defocus_blur|fog|gaussian_noise>:<1-5>``: the source plus an image corruption;
* ``colored`` / ``colored-permuted``: one fixed colour per class, untextured; the permuted version
  swaps the colours between classes (the Colored-Cityscapes analogue, paper Appendix I).

**W1.** :func:`prior_w1` gives the 1-D Wasserstein distance between two domains' laws of each
continuous factor of an object surface (the exact quantile/CDF formula, :func:`w1_between`), in
the factor's units and normalised by the width of its source-and-target range, and their sum. It
is exact, read off the priors; :func:`coremtl_lite.diagnostics.leakage.residual_w1` estimates the
W1 of the joint residual vector from samples instead.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from coremtl_lite.data import _random
from coremtl_lite.data.corruptions import CORRUPTIONS
from coremtl_lite.data.scenes.appearance import hsv_to_rgb, light_direction, lighting_sh
from coremtl_lite.data.scenes.geometry import NUM_CLASSES, NUM_SHAPES, surface_classes
from coremtl_lite.shading import srgb_to_linear

#: the training rho and the target's severity when a config does not set them, chosen by measurement
#: (tutorial 01b, section 2). ShadedScenes v3, a vanilla EW model trained on the default source (cpu
#: profile, seed 0): segmentation mIoU 0.435 on the source, 0.224 on the default target, 0.095 for the
#: majority class -- the target sits more than 0.1 from both; trained without the shortcut (rho 0) the
#: same model reaches only 0.293 on the source, so the training default keeps half of it
DEFAULT_RHO = 0.5
DEFAULT_SEVERITY = 0.5

GROUPS = ("colour", "texture", "lighting", "camera")


@dataclass(frozen=True)
class Factor:
    """A continuous residual factor: uniform on ``source`` at severity 0 and on ``target`` at 1."""

    name: str
    group: str
    source: tuple[float, float]
    target: tuple[float, float]
    unit: str = ""

    def range_at(self, severity: float) -> tuple[float, float]:
        """The factor's range at ``severity``: the linear interpolation of the two ranges' ends."""
        s = float(severity)
        return (
            (1.0 - s) * self.source[0] + s * self.target[0],
            (1.0 - s) * self.source[1] + s * self.target[1],
        )


_DEG = math.pi / 180.0

#: the residual priors: one row per continuous factor (source range -> target range)
FACTORS = (
    # free (class-independent) colour of a surface, in sRGB HSV; the hue is uniform on [0, 1) in both
    Factor("saturation", "colour", (0.35, 0.75), (0.2, 0.9)),
    Factor("value", "colour", (0.6, 0.9), (0.45, 0.9)),
    # texture: frequency (texture_freq / 2 periods per half-width of the image) and contrast (0 = plain colour)
    Factor("texture_freq", "texture", (1.5, 4.5), (2.0, 8.0)),
    Factor("texture_amp", "texture", (0.05, 0.2), (0.1, 0.4)),
    # lighting: the azimuth relative to the direction of the objects' centroid, elevation, colour, strength
    Factor("light_azimuth_offset", "lighting", (-0.5, 0.5), (-math.pi, math.pi), "rad"),
    Factor("light_elevation", "lighting", (45 * _DEG, 75 * _DEG), (30 * _DEG, 55 * _DEG), "rad"),
    Factor("light_temperature", "lighting", (4500.0, 6000.0), (6500.0, 9500.0), "K"),
    Factor("light_intensity", "lighting", (0.6, 0.9), (0.5, 1.0)),
    Factor("ambient", "lighting", (0.15, 0.3), (0.1, 0.35)),
    # camera
    Factor("exposure", "camera", (0.9, 1.1), (0.8, 1.25)),
    Factor("noise_std", "camera", (0.005, 0.015), (0.005, 0.015)),
)
FACTOR_BY_NAME = {f.name: f for f in FACTORS}

#: the class-keyed colour a surface keeps with probability rho: hue (class k of the 6 shapes at
#: (k - 1) / 6, plus a N(0, jitter^2) jitter), saturation and value ranges; the ground's own
KEYED_COLOUR: dict[str, Any] = {
    "hue_jitter": 0.02,
    "saturation": (0.55, 0.65),
    "value": (0.75, 0.85),
    "ground_hue": 0.28,
    "ground_saturation": (0.2, 0.3),
    "ground_value": (0.5, 0.6),
}

# Colored-Cityscapes analogue: one fixed linear-RGB colour per class (ground first), and the
# permutation the permuted domain applies (a derangement: every class changes colour).
COLORED_PALETTE = srgb_to_linear(
    torch.tensor(
        [
            [0.45, 0.45, 0.45],
            [0.90, 0.15, 0.15],
            [0.15, 0.75, 0.20],
            [0.15, 0.30, 0.90],
            [0.95, 0.85, 0.10],
            [0.80, 0.20, 0.85],
            [0.10, 0.85, 0.85],
        ]
    )
)
COLORED_PERMUTATION = (3, 5, 0, 6, 1, 2, 4)


@dataclass(frozen=True)
class Domain:
    """A parsed domain: the dials and what else changes the image.

    ``rho`` is the class-keying of the unshifted law; ``severity`` holds one severity per group of
    :data:`GROUPS`; ``corruption`` is ``(name, 1-5)`` or None; ``colored`` is None, ``"fixed"`` or
    ``"permuted"``.
    """

    name: str
    rho: float
    severity: tuple[float, float, float, float]
    corruption: tuple[str, int] | None = None
    colored: str | None = None

    def severity_of(self, group: str) -> float:
        return self.severity[GROUPS.index(group)]

    @property
    def rho_effective(self) -> float:
        """The probability that a surface keeps its class-keyed colour: ``(1 - s_colour) * rho``."""
        return (1.0 - self.severity_of("colour")) * self.rho


DOMAIN_FORMS = (
    "source",
    "target",
    "shift:<0..1>",
    "rho:<0..1>",
    f"only:<{'|'.join(GROUPS)}>",
    f"corrupt:<{'|'.join(sorted(CORRUPTIONS))}>:<1-5>",
    "colored",
    "colored-permuted",
)


def _dial(domain: str, text: str, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0.0 <= value <= 1.0:
        raise ValueError(
            f"bad ShadedScenes domain {domain!r}: the {what} must be a number in [0, 1], got "
            f"{text!r}; valid domains: {', '.join(DOMAIN_FORMS)}"
        )
    return value


def parse_domain(domain: str, rho: float = DEFAULT_RHO, severity: float = DEFAULT_SEVERITY) -> Domain:
    """The :class:`Domain` of a domain name (module docstring), given the dataset's ``rho`` (for
    ``source`` and every form built on it) and ``severity`` (for ``target``)."""
    if not (0.0 <= rho <= 1.0 and 0.0 <= severity <= 1.0):
        raise ValueError(
            f"ShadedScenes rho and severity must be in [0, 1], got rho={rho}, severity={severity}"
        )
    none = (0.0, 0.0, 0.0, 0.0)
    head, _, rest = domain.partition(":")
    if domain == "source":
        return Domain(domain, rho, none)
    if domain == "target":
        return Domain(domain, 0.0, (severity,) * 4)
    if domain in ("colored", "colored-permuted"):
        return Domain(domain, 0.0, none, colored="permuted" if domain.endswith("permuted") else "fixed")
    if head == "shift" and rest:
        sev = _dial(domain, rest, "severity")
        return Domain(domain, rho, (sev, sev, sev, sev))
    if head == "rho" and rest:
        return Domain(domain, _dial(domain, rest, "rho"), none)
    if head == "only" and rest in GROUPS:
        c, t, li, ca = (1.0 if g == rest else 0.0 for g in GROUPS)
        return Domain(domain, rho, (c, t, li, ca))
    if head == "corrupt":
        name, _, level = rest.partition(":")
        if name not in CORRUPTIONS or level not in ("1", "2", "3", "4", "5"):
            raise ValueError(
                f"bad corruption domain {domain!r}: use corrupt:<name>:<severity> with name in "
                f"{sorted(CORRUPTIONS)} and severity 1-5"
            )
        return Domain(domain, rho, none, corruption=(name, int(level)))
    raise ValueError(f"unknown ShadedScenes domain {domain!r}; valid domains: {', '.join(DOMAIN_FORMS)}")


# ---------------------------------------------------------------------------------------- sampling
def _uniform_at(factor: str, severity: float, u: torch.Tensor) -> torch.Tensor:
    lo, hi = FACTOR_BY_NAME[factor].range_at(severity)
    return lo + (hi - lo) * u


def draw_residual_factors(
    seed: int, global_indices: torch.Tensor, semantic: dict[str, torch.Tensor], domain: Domain
) -> dict[str, torch.Tensor]:
    """The named residual factors of scenes ``global_indices`` under ``domain`` (before rendering).

    Per surface ``(B, 6)`` (objects 0-4, then the ground): ``keyed`` (bool), ``hue``, ``saturation``,
    ``value``, ``texture_kind``, ``texture_freq``, ``texture_amp``, ``texture_angle``,
    ``texture_phase``; per scene ``(B,)``: the lighting and camera factors of :data:`FACTORS` and
    ``light_azimuth`` (the offset plus the centroid's direction). Every domain reads the same random
    numbers for the same scene, so ``shift:0`` is the source bit for bit.
    """
    key = _random.keys(seed, _random.stream_id("residual:scenes"), global_indices)
    u, z = _random.uniform(key, 72), _random.normal(key ^ 0x5BD1E995, 6)
    cls = surface_classes(semantic["shape"])  # (B, 6); the ground is class 0
    ground = cls == 0
    s_col, s_tex = domain.severity_of("colour"), domain.severity_of("texture")
    s_light, s_cam = domain.severity_of("lighting"), domain.severity_of("camera")
    # colour: class-keyed with probability rho_eff, else free
    keyed = u[:, 0:6] < domain.rho_effective
    k = KEYED_COLOUR
    keyed_hue = torch.where(
        ground, k["ground_hue"], ((cls.float() - 1.0) / NUM_SHAPES + k["hue_jitter"] * z) % 1.0
    )
    ks = torch.where(ground, k["ground_saturation"][0], k["saturation"][0])
    ks_w = torch.where(
        ground, k["ground_saturation"][1] - k["ground_saturation"][0], k["saturation"][1] - k["saturation"][0]
    )
    kv = torch.where(ground, k["ground_value"][0], k["value"][0])
    kv_w = torch.where(ground, k["ground_value"][1] - k["ground_value"][0], k["value"][1] - k["value"][0])
    hue = torch.where(keyed, keyed_hue, u[:, 6:12])
    sat = torch.where(keyed, ks + ks_w * u[:, 12:18], _uniform_at("saturation", s_col, u[:, 12:18]))
    val = torch.where(keyed, kv + kv_w * u[:, 18:24], _uniform_at("value", s_col, u[:, 18:24]))
    # texture: a target kind (checker or blotches, evenly) with probability s_texture
    target_kind = 1 + (u[:, 30:36] * 2).long().clamp_max(1)
    tex_kind = torch.where(u[:, 24:30] < s_tex, target_kind, 0)
    # lighting: the azimuth follows the objects' centroid up to the offset
    pos, vf = semantic["position"].float(), semantic["valid"].float()
    centroid = (pos * vf[..., None]).sum(1) / vf.sum(1, keepdim=True).clamp_min(1.0)
    offset = _uniform_at("light_azimuth_offset", s_light, u[:, 60])
    return {
        "keyed": keyed,
        "hue": hue,
        "saturation": sat,
        "value": val,
        "texture_kind": tex_kind,
        "texture_freq": _uniform_at("texture_freq", s_tex, u[:, 36:42]),
        "texture_amp": _uniform_at("texture_amp", s_tex, u[:, 42:48]),
        "texture_angle": math.pi * u[:, 48:54],
        "texture_phase": 2 * math.pi * u[:, 54:60],
        "light_azimuth_offset": offset,
        "light_azimuth": torch.atan2(centroid[:, 1], centroid[:, 0]) + offset,
        "light_elevation": _uniform_at("light_elevation", s_light, u[:, 61]),
        "light_temperature": _uniform_at("light_temperature", s_light, u[:, 62]),
        "light_intensity": _uniform_at("light_intensity", s_light, u[:, 63]),
        "ambient": _uniform_at("ambient", s_light, u[:, 64]),
        "exposure": _uniform_at("exposure", s_cam, u[:, 65]),
        "noise_std": _uniform_at("noise_std", s_cam, u[:, 66]),
        "noise_seed": _random.hash32(key ^ 0x27D4EB2F),
    }


def draw_colored_factors(
    seed: int, global_indices: torch.Tensor, semantic: dict[str, torch.Tensor], domain: Domain
) -> dict[str, torch.Tensor]:
    """The factors of ``colored`` / ``colored-permuted``: :data:`COLORED_PALETTE` by class (permuted by
    :data:`COLORED_PERMUTATION`), no texture, source lighting ranges with a uniform azimuth."""
    f = draw_residual_factors(seed, global_indices, semantic, Domain("source", 0.0, (0.0,) * 4))
    cls = surface_classes(semantic["shape"])
    perm = COLORED_PERMUTATION if domain.colored == "permuted" else tuple(range(NUM_CLASSES))
    f["albedo"] = COLORED_PALETTE[torch.tensor(perm)[cls]]
    f["texture_amp"] = torch.zeros_like(f["texture_amp"])
    u = _random.uniform(_random.keys(seed, _random.stream_id("residual:colored"), global_indices), 1)
    f["light_azimuth"] = 2 * math.pi * u[:, 0]
    return f


def residual_from_factors(f: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The renderer's residual dict (:data:`~.appearance.RESIDUAL_KEYS` plus ``sh``) from named factors."""
    albedo = (
        f["albedo"] if "albedo" in f else srgb_to_linear(hsv_to_rgb(f["hue"], f["saturation"], f["value"]))
    )
    b = f["exposure"].shape[0]
    residual = {
        "albedo": albedo.float(),
        "texture_kind": f["texture_kind"],
        "texture_freq": f["texture_freq"].float(),
        "texture_angle": f["texture_angle"],
        "texture_phase": f["texture_phase"],
        "texture_amp": f["texture_amp"].float(),
        "light_dir": light_direction(f["light_azimuth"], f["light_elevation"]).reshape(b, 3),
        "light_temperature": f["light_temperature"].float(),
        "light_intensity": f["light_intensity"],
        "ambient": f["ambient"],
        "exposure": f["exposure"],
        "noise_std": f["noise_std"],
        "noise_seed": f["noise_seed"],
    }
    residual["sh"] = lighting_sh(residual)
    return residual


# ---------------------------------------------------------------------------------------------- W1
def uniform_w1(a: tuple[float, float], b: tuple[float, float]) -> float:
    """W1 between U[a] and U[b] in closed form: ``int_0^1 |Q_a(t) - Q_b(t)| dt`` with linear quantiles
    ``Q(t) = lo + t (hi - lo)``, i.e. the integral of ``|d0 + t dw|`` (``d0`` the gap of the lower ends,
    ``dw`` the difference of the widths)."""
    d0, d1 = a[0] - b[0], a[1] - b[1]  # Q_a - Q_b at t = 0 and t = 1
    if d0 * d1 >= 0:
        return abs(d0 + d1) / 2.0
    return (d0 * d0 + d1 * d1) / (2.0 * abs(d1 - d0))


def _normal_cdf(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * (1.0 + torch.erf(torch.as_tensor(x, dtype=torch.float64) / math.sqrt(2.0)))


def factor_cdf(name: str, domain: Domain, x: torch.Tensor) -> torch.Tensor:
    """CDF at ``x`` of factor ``name`` of an object surface (or a scene) under ``domain``.

    Colour factors are mixtures: the class-keyed law with weight ``rho_eff`` (hue: the 6 class hues
    with their Gaussian jitter, wrapped onto [0, 1); saturation and value: the keyed ranges), the free
    law otherwise (hue uniform; the table's ranges). Other factors are uniform on their range.
    """
    x = x.double()

    def uniform_cdf(lo: float, hi: float) -> torch.Tensor:
        return ((x - lo) / (hi - lo)).clamp(0.0, 1.0) if hi > lo else (x >= lo).double()

    if name == "hue":
        sd = KEYED_COLOUR["hue_jitter"]
        keyed = torch.zeros_like(x)
        for c in range(NUM_SHAPES):
            mu = c / NUM_SHAPES
            for wrap in (-1.0, 0.0, 1.0):  # wrapped normal on [0, 1): copies shifted by whole turns
                keyed = (
                    keyed
                    + (_normal_cdf((x - mu + wrap) / sd) - _normal_cdf((0.0 - mu + wrap) / sd)) / NUM_SHAPES
                )
        free = uniform_cdf(0.0, 1.0)
        return domain.rho_effective * keyed + (1.0 - domain.rho_effective) * free
    factor = FACTOR_BY_NAME[name]
    free = uniform_cdf(*factor.range_at(domain.severity_of(factor.group)))
    if name in ("saturation", "value"):
        return domain.rho_effective * uniform_cdf(*KEYED_COLOUR[name]) + (1.0 - domain.rho_effective) * free
    return free


W1_FACTORS = ("hue",) + tuple(f.name for f in FACTORS)


def _support(name: str) -> tuple[float, float]:
    if name == "hue":
        return 0.0, 1.0
    f = FACTOR_BY_NAME[name]
    lo, hi = min(f.source[0], f.target[0]), max(f.source[1], f.target[1])
    if name in KEYED_COLOUR:
        lo, hi = min(lo, KEYED_COLOUR[name][0]), max(hi, KEYED_COLOUR[name][1])
    return lo, hi


def w1_between(name: str, a: Domain, b: Domain, points: int = 100_001) -> float:
    """W1 of factor ``name`` between domains ``a`` and ``b``: ``int |F_a(x) - F_b(x)| dx`` over the
    factor's support (equal to the quantile formula in 1-D), by the trapezoid rule on ``points``
    points; the CDFs are piecewise smooth, so the error is far below any sampling error.

    The sum's last bits depend on how many threads share it; rounded to 12 decimals (far finer than
    the rule's own error), the value is the same on any number of threads (0.55 x 0.75 = 0.4125, a
    shift's temperature W1, would otherwise print as 0.412 or 0.413)."""
    lo, hi = _support(name)
    if hi <= lo:
        return 0.0
    x = torch.linspace(lo, hi, points, dtype=torch.float64)
    return round(float(torch.trapezoid((factor_cdf(name, a, x) - factor_cdf(name, b, x)).abs(), x)), 12)


def prior_w1(
    a: Domain | str, b: Domain | str, rho: float = DEFAULT_RHO, severity: float = DEFAULT_SEVERITY
) -> dict[str, float | dict[str, float]]:
    """W1 between the residual laws of two domains (names are parsed with ``rho`` and ``severity``).

    Returns ``per_factor`` (W1 of each continuous factor of :data:`W1_FACTORS`, in its own units; hue
    as a fraction of a turn, measured on [0, 1) rather than on the circle), ``normalised`` (each
    divided by the width of the factor's support, source and target ranges together, so unitless in
    [0, 1]), ``sum`` (of the normalised ones) and ``l2`` (their Euclidean norm). The categorical
    texture kind is not included: it moves with the texture group's severity.

    These are distances between *marginal* laws. rho mostly changes how the hue depends on the class,
    not the hue's marginal (six evenly spaced class hues are nearly uniform): between the default
    source and target the hue's normalised W1 is 0.013, against 0.28 for the light's temperature.
    """
    da = parse_domain(a, rho, severity) if isinstance(a, str) else a
    db = parse_domain(b, rho, severity) if isinstance(b, str) else b
    per = {n: w1_between(n, da, db) for n in W1_FACTORS}
    norm = {n: v / (_support(n)[1] - _support(n)[0]) for n, v in per.items()}
    return {
        "per_factor": per,
        "normalised": norm,
        "sum": sum(norm.values()),
        "l2": math.sqrt(sum(v * v for v in norm.values())),
    }


def shift_w1(rho: float, severity: float) -> dict[str, float | dict[str, float]]:
    """:func:`prior_w1` between the source at ``rho`` and the domain ``shift:<severity>`` (the
    study's dials: training rho, test severity)."""
    return prior_w1("source", f"shift:{severity}", rho=rho)
