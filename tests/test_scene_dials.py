"""ShadedScenes' dials: rho (spurious correlation), severity (shift), the per-factor domains, W1."""

import math

import pytest
import torch
from scipy.stats import wasserstein_distance

from coremtl_lite.config import ConfigError, get_config
from coremtl_lite.data import ShadedScenes, build_splits
from coremtl_lite.data.scenes import priors
from coremtl_lite.data.scenes.priors import (
    FACTORS,
    GROUPS,
    parse_domain,
    prior_w1,
    shift_w1,
    uniform_w1,
    w1_between,
)

DOMAINS = (
    "source",
    "target",
    "shift:0.3",
    "rho:0",
    "rho:1",
    "only:colour",
    "only:texture",
    "only:lighting",
    "only:camera",
    "corrupt:fog:2",
    "colored",
    "colored-permuted",
)
SCENE_FACTORS = [f.name for f in FACTORS if f.group in ("lighting", "camera")]
SURFACE_FACTORS = ["saturation", "value", "texture_freq", "texture_amp"]


def _named(domain, n=64, **kw):
    ds = ShadedScenes(domain=domain, size=16, length=n, seed=5, **kw)
    return ds.sample_named_residual(range(n))


def test_labels_and_semantic_factors_are_bit_identical_across_domains():
    ref = ShadedScenes(size=24, length=40, seed=2).get_batch(range(0, 40, 3))
    for domain in DOMAINS:
        for kw in ({}, {"rho": 0.9, "severity": 0.4}):
            b = ShadedScenes(domain=domain, size=24, length=40, seed=2, **kw).get_batch(range(0, 40, 3))
            for key in ("segmentation", "depth", "normal"):
                assert torch.equal(b[key], ref[key]), (domain, key)
            for key, v in ref["factors"]["semantic"].items():
                assert torch.equal(b["factors"]["semantic"][key], v), (domain, key)
            if domain != "source" or kw:
                assert not torch.equal(b["image"], ref["image"]), domain


def test_severity_zero_is_the_source_and_one_the_target_bit_for_bit():
    for rho in (0.0, 0.5, 1.0):
        src = ShadedScenes(size=32, length=16, seed=1, rho=rho).get_batch(range(16))
        s0 = ShadedScenes(domain="shift:0", size=32, length=16, seed=1, rho=rho).get_batch(range(16))
        assert torch.equal(src["image"], s0["image"])
        tgt = ShadedScenes(domain="target", size=32, length=16, seed=1, rho=rho, severity=1.0).get_batch(
            range(16)
        )
        s1 = ShadedScenes(domain="shift:1", size=32, length=16, seed=1, rho=rho).get_batch(range(16))
        assert torch.equal(tgt["image"], s1["image"])
    # the target's severity is the dataset's: target at severity 0.5 is shift:0.5 without the keying
    half = ShadedScenes(domain="target", size=16, length=8, seed=1, severity=0.5).sample_named_residual(
        range(8)
    )
    mid = ShadedScenes(domain="shift:0.5", size=16, length=8, seed=1, rho=0.0).sample_named_residual(range(8))
    for k in half:
        assert torch.equal(half[k], mid[k]), k


def test_every_range_interpolates_linearly_between_source_and_target():
    src, tgt = _named("shift:0", rho=0.0), _named("shift:1", rho=0.0)
    for s in (0.25, 0.5, 0.8):
        mid = _named(f"shift:{s}", rho=0.0)
        for name in SCENE_FACTORS + SURFACE_FACTORS:
            expect = (1 - s) * src[name] + s * tgt[name]
            assert torch.allclose(mid[name], expect, rtol=1e-5, atol=1e-6), name
    for f in FACTORS:  # and the draws stay inside the table's ranges
        for s, named in ((0.0, src), (1.0, tgt)):
            lo, hi = f.range_at(s)
            assert named[f.name].min() >= lo - 1e-6 and named[f.name].max() <= hi + 1e-6, (f.name, s)
    # texture kind: stripes in the source, checker/blotches in the target, a mix in between
    assert (src["texture_kind"] == 0).all() and (tgt["texture_kind"] > 0).all()
    frac = (_named("shift:0.5", n=2000, rho=0.0)["texture_kind"] > 0).float().mean()
    assert abs(float(frac) - 0.5) < 0.03


@pytest.mark.parametrize("rho", [0.0, 0.3, 0.7, 1.0])
def test_rho_is_the_probability_that_a_surface_keeps_its_class_keyed_colour(rho):
    ds = ShadedScenes(size=16, length=3000, seed=0, rho=rho)
    sem = ds.sample_semantic(range(3000))
    f = ds.sample_named_residual(range(3000), sem)
    assert abs(float(f["keyed"].float().mean()) - rho) < 0.02
    # keyed objects carry their class's hue (up to the jitter), free ones any hue
    valid = sem["valid"]
    keyed, shape = f["keyed"][:, :5] & valid, sem["shape"]
    if keyed.any():
        gap = (f["hue"][:, :5] - shape.float() / 6.0 + 0.5) % 1.0 - 0.5
        assert gap[keyed].abs().max() < 0.12
    # the colour is keyed less as the colour group shifts: rho_eff = (1 - s) rho
    assert parse_domain("shift:0.25", rho=rho).rho_effective == pytest.approx(0.75 * rho)
    assert parse_domain("only:colour", rho=rho).rho_effective == 0.0
    assert parse_domain("target", rho=rho).rho_effective == 0.0


def test_per_factor_domains_shift_one_group_only():
    src = _named("source")
    for group in GROUPS:
        named = _named(f"only:{group}")
        shifted = {f.name for f in FACTORS if f.group == group}
        shifted |= {
            "colour": {"keyed", "hue"},
            "texture": {"texture_kind"},
            "lighting": {"light_azimuth"},
            "camera": set(),
        }[group]
        for k, v in named.items():
            same = torch.equal(v, src[k])
            if k in shifted and not (k == "noise_std"):  # the noise level has the same range in both
                assert not same, (group, k)
            elif k not in shifted:
                assert same, (group, k)


@pytest.mark.parametrize(
    "bad", ["shift:1.5", "shift:", "rho:x", "rho:-0.1", "only:hue", "tagret", "corrupt:fog:6"]
)
def test_bad_domain_names_are_named_with_the_valid_forms(bad):
    with pytest.raises(ValueError, match="domain") as err:
        ShadedScenes(domain=bad)
    assert repr(bad) in str(err.value)
    if not bad.startswith("corrupt"):
        assert "shift:<0..1>" in str(err.value) and "only:<colour" in str(err.value)
    with pytest.raises(ValueError, match="rho and severity"):
        ShadedScenes(rho=1.2)


def test_config_dials_are_validated_and_reach_the_datasets():
    for key in ("data.rho=1.5", "data.severity=-0.1"):
        with pytest.raises(ConfigError, match=key.split("=")[0]):
            get_config("ci", [key])
    cfg = get_config("ci", ["data.rho=0.2", "data.severity=0.6", "data.eval_domains=source,target,shift:0.4"])
    sp = build_splits(cfg.data, seed=0)
    for ds in (sp.train, sp.val, *sp.test.values()):
        assert (ds.rho, ds.severity) == (0.2, 0.6)
    assert sp.test["target"].spec.severity == (0.6,) * 4 and sp.test["target"].spec.rho_effective == 0.0
    assert sp.train.spec.rho_effective == 0.2


def test_uniform_w1_closed_form_on_hand_made_cases():
    assert uniform_w1((0.0, 1.0), (2.0, 3.0)) == pytest.approx(2.0)  # a translation moves all mass by 2
    assert uniform_w1((0.0, 1.0), (0.0, 2.0)) == pytest.approx(0.5)  # int_0^1 t dt
    assert uniform_w1((0.0, 2.0), (0.5, 1.5)) == pytest.approx(0.25)  # quantiles cross at t = 1/2
    assert uniform_w1((1.0, 3.0), (1.0, 3.0)) == 0.0
    # the CDF integral used for every factor agrees with the closed form on the uniform ones
    src, tgt = parse_domain("source"), parse_domain("shift:1")
    for f in FACTORS:
        if f.group in ("lighting", "camera", "texture"):
            assert w1_between(f.name, src, tgt) == pytest.approx(uniform_w1(f.source, f.target), abs=1e-6), (
                f.name
            )


def _samples(domain, rho, n=6000):
    ds = ShadedScenes(domain=domain, size=16, length=n, seed=3, rho=rho)
    sem = ds.sample_semantic(range(n))
    f = ds.sample_named_residual(range(n), sem)
    obj = sem["valid"]
    return {
        k: (v[:, :5][obj] if v.dim() == 2 else v).double().numpy()
        for k, v in f.items()
        if k in priors.W1_FACTORS
    }


def test_residual_w1_matches_the_empirical_distance_between_samples():
    a, b = _samples("source", 0.6), _samples("shift:0.7", 0.6)
    w = prior_w1("source", "shift:0.7", rho=0.6)
    for name in priors.W1_FACTORS:
        emp = wasserstein_distance(a[name], b[name])
        width = priors._support(name)[1] - priors._support(name)[0]
        assert abs(emp - w["per_factor"][name]) < 0.02 * width, (name, emp, w["per_factor"][name])
    assert w["sum"] == pytest.approx(sum(w["normalised"].values()))
    assert w["l2"] == pytest.approx(math.sqrt(sum(v * v for v in w["normalised"].values())))


def test_w1_grows_with_severity_and_with_the_rho_gap():
    sums = [shift_w1(0.5, s)["sum"] for s in (0.0, 0.25, 0.5, 0.75, 1.0)]
    assert sums[0] == pytest.approx(0.0, abs=1e-9) and all(x < y for x, y in zip(sums, sums[1:]))
    hue = [prior_w1(f"rho:{r}", "target")["per_factor"]["hue"] for r in (0.0, 0.5, 1.0)]
    assert hue[0] < 1e-6 < hue[1] < hue[2] and hue[2] == pytest.approx(2 * hue[1], rel=1e-6)
