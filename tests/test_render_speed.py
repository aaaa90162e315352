"""The faster renderer draws the same scenes bit for bit; the rendering benchmark script runs (issue 15).

The pre-speed-up renderer is kept in ``tests/_render_reference.py`` (why not a stored hash: see there).
"""

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from _render_reference import ReferenceScenes, fog_reference, noise_fields_reference, plasma_fractal_reference

from coremtl_lite.data import ShadedScenes
from coremtl_lite.data.corruptions import fog, plasma_fractal, plasma_fractals
from coremtl_lite.data.scenes import noise_fields

ROOT = Path(__file__).resolve().parents[1]
DOMAINS = ("source", "target", "colored", "colored-permuted", "corrupt:fog:3", "corrupt:defocus_blur:1")


@pytest.mark.parametrize("size", [64, 21])
@pytest.mark.parametrize("domain", DOMAINS)
def test_renderer_is_bit_identical_to_the_reference(domain, size):
    # 120 scenes: every shape, object count and edge overhang occurs; an odd size checks the windows' clipping
    new = ShadedScenes(domain=domain, size=size, length=400, seed=7, offset=3)
    old = ReferenceScenes(domain=domain, size=size, length=400, seed=7, offset=3)
    idx = list(range(0, 360, 3))
    factors = new.sample_factors(idx)
    geo_new, geo_old = new.geometry(factors["semantic"]), old.geometry(factors["semantic"])
    assert geo_new.keys() == geo_old.keys()
    for key in geo_new:
        assert torch.equal(geo_new[key], geo_old[key]), key
    a, b = new.get_batch(idx), old.get_batch(idx)
    for key in ("image", "segmentation", "depth", "normal"):
        assert torch.equal(a[key], b[key]), key
    assert set(factors["semantic"]["shape"][factors["semantic"]["valid"]].tolist()) == set(range(6))


def test_noise_fields_and_fog_match_the_reference():
    seeds = torch.arange(40) * 7919 + 5
    assert torch.equal(noise_fields(seeds, 24, 20), noise_fields_reference(seeds, 24, 20))
    assert noise_fields(seeds[:0], 8, 8).shape == (0, 3, 8, 8)
    x = torch.rand(6, 3, 40, 40, generator=torch.Generator().manual_seed(1))
    assert torch.equal(fog(x, 4, seeds=torch.arange(6)), fog_reference(x, 4, seeds=torch.arange(6)))
    gens = [torch.Generator().manual_seed(s) for s in (3, 4)]
    batched = plasma_fractals(32, 1.7, gens)
    for s, m in zip((3, 4), batched):
        assert torch.equal(m, plasma_fractal_reference(32, 1.7, torch.Generator().manual_seed(s)))
        assert torch.equal(m, plasma_fractal(32, 1.7, torch.Generator().manual_seed(s)))


def _same(a, b) -> bool:
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return torch.equal(a, b)


def test_bench_render_script_runs():
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_render.py"), "--threads", "1",
                          "--batch", "8", "--repeats", "1", "--sizes", "16", "64", "--domains", "source",
                          "corrupt:fog:1"], capture_output=True, text=True, timeout=300, check=True).stdout
    assert "16x16" in out and "corrupt:fog:1" in out
    assert "goal >= 5000" in out and "goal >= 2000" in out
