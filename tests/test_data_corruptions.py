"""The four Cityscapes-C corruptions, against their definitions and (when installed) the reference."""

import numpy as np
import pytest
import torch

from coremtl_lite.data.corruptions import (
    CONTRAST,
    GAUSSIAN_NOISE,
    corrupt,
    corruption_strength,
    disk_kernel,
    plasma_fractal,
)


def _image(seed=0, size=64):
    g = torch.Generator().manual_seed(seed)
    smooth = torch.nn.functional.avg_pool2d(torch.rand(1, 3, size, size, generator=g), 5, 1, 2)
    return (0.2 + 0.6 * smooth[0]).clamp(0, 1)


def test_contrast_definition():
    x = _image()
    y = corrupt(x, "contrast", 3)
    m = x.mean(dim=(1, 2), keepdim=True)
    assert torch.allclose(y, (x - m) * CONTRAST[2] + m)


def test_disk_kernel_normalised_and_round():
    for r in (3, 4, 6, 8, 10):
        k = disk_kernel(r, 0.5)
        assert (
            abs(float(k.sum()) - 1.0) < 0.02
        )  # the reference blurs the normalised disk with a reflect border
        assert torch.allclose(k, k.flip(0)) and torch.allclose(k, k.T)
    assert disk_kernel(3, 0.1).shape == (17, 17) and disk_kernel(10, 0.5).shape == (21, 21)


def test_random_corruptions_deterministic_per_seed():
    x = torch.stack([_image(0), _image(1)])
    seeds = torch.tensor([5, 6])
    for name in ("fog", "gaussian_noise"):
        assert torch.equal(corrupt(x, name, 2, seeds=seeds), corrupt(x, name, 2, seeds=seeds))
        assert not torch.equal(corrupt(x, name, 2, seeds=seeds), corrupt(x, name, 2, seeds=seeds + 1))
        with pytest.raises(ValueError, match="seeds"):
            corrupt(x, name, 2)
    noisy = corrupt(torch.full((3, 64, 64), 0.5), "gaussian_noise", 2, seeds=torch.tensor([0]))
    assert abs(float((noisy - 0.5).std()) - GAUSSIAN_NOISE[1]) < 0.005


def test_bad_arguments():
    with pytest.raises(ValueError, match="severity"):
        corrupt(_image(), "contrast", 0)
    with pytest.raises(ValueError, match="unknown corruption"):
        corrupt(_image(), "snow", 1)
    with pytest.raises(ValueError, match="power of two"):
        plasma_fractal(48, 2.0, torch.Generator())


@pytest.mark.parametrize("name", ["contrast", "defocus_blur", "fog", "gaussian_noise"])
def test_monotonic_in_severity(name):
    x = _image().expand(8, -1, -1, -1)
    d = [corruption_strength(x, corrupt(x, name, s, seeds=torch.arange(8)), name) for s in range(1, 6)]
    assert all(a < b for a, b in zip(d, d[1:])), d


# ------------------------------------------------------------------- against the reference package
@pytest.mark.parametrize("name", ["contrast", "defocus_blur"])
def test_deterministic_corruptions_match_reference(name):
    ic = pytest.importorskip("imagecorruptions")
    x = _image(3)
    x8 = (x.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    xq = torch.from_numpy(x8).permute(2, 0, 1).float() / 255.0
    for sev in range(1, 6):
        ref = torch.from_numpy(np.asarray(ic.corrupt(x8, severity=sev, corruption_name=name))).permute(
            2, 0, 1
        )
        ours = corrupt(xq, name, sev) * 255.0
        assert (ours - ref.float()).abs().max() <= 1.0 + 1e-3, (name, sev)  # the reference truncates to uint8


@pytest.mark.parametrize("name", ["fog", "gaussian_noise"])
def test_random_corruptions_match_reference_in_distribution(name):
    ic = pytest.importorskip("imagecorruptions")
    x = _image(4)
    x8 = (x.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    xq = torch.from_numpy(x8).permute(2, 0, 1).float() / 255.0
    np.random.seed(0)
    for sev in (1, 3, 5):
        refs = torch.stack(
            [
                torch.from_numpy(np.asarray(ic.corrupt(x8, severity=sev, corruption_name=name)))
                .permute(2, 0, 1)
                .float()
                / 255.0
                for _ in range(8)
            ]
        )
        ours = corrupt(xq.expand(8, -1, -1, -1), name, sev, seeds=torch.arange(8))
        # same mean brightness and same spread of the change, up to sampling noise
        assert abs(float(ours.mean() - refs.mean())) < 0.03, (name, sev)
        assert abs(float((ours - xq).std() - (refs - xq).std())) < 0.03, (name, sev)
