"""The LPIPS loader reads AlexNet from the local torch hub cache and never downloads (losses/reconstruction.py)."""

from __future__ import annotations

import warnings

import pytest
import torch

from coremtl_lite.losses.reconstruction import LPIPSLoss, SSIMLoss, build_perceptual


def test_lpips_without_cached_weights_raises_without_a_download(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))

    def no_network(*args, **kwargs):
        raise AssertionError("the LPIPS loader tried to download")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_network)
    with pytest.raises(FileNotFoundError, match="alexnet-owt-7be5be79.pth"):
        LPIPSLoss("alex")
    with pytest.raises(RuntimeError, match="loss.perceptual=lpips"):
        build_perceptual("lpips")


def test_lpips_loads_the_cached_backbone_silently(tmp_path, monkeypatch):
    import torchvision

    torch.manual_seed(0)
    alexnet = torchvision.models.alexnet(weights=None)
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    torch.save(alexnet.state_dict(), tmp_path / "hub" / "checkpoints" / LPIPSLoss.BACKBONE_FILE)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torchvision's deprecation warnings are silenced at their source
        loss = LPIPSLoss("alex")
    assert torch.equal(getattr(loss.net.net.slice1, "0").weight, alexnet.features[0].weight)
    assert torch.equal(getattr(loss.net.net.slice5, "10").bias, alexnet.features[10].bias)
    a, b = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32)
    assert float(loss(a, a)) == pytest.approx(0.0, abs=1e-6) and float(loss(a, b)) > 0
    assert not isinstance(build_perceptual("lpips"), SSIMLoss)
