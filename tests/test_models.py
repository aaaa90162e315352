"""Tests of coremtl_lite.models: shapes, gradients, the z_s-only head constraint, decoders, encoders."""

import math

import pytest
import torch

from coremtl_lite import get_config
from coremtl_lite.models import MODEL_BUILDERS, build_model, encoders
from coremtl_lite.models.blocks import (
    BilinearUpsample,
    ConvBNReLU,
    DilatedDepthwiseConv2d,
    bilinear_matrix,
    channels_first,
    l2_normalise,
    upsample_to,
)
from coremtl_lite.shading import SH_C0, SH_C1, SH_C3, linear_to_srgb, sh_shading
from coremtl_lite.tasks import tasks_from_info

INFO = {
    "segmentation": {"kind": "segmentation", "num_classes": 5},
    "depth": {"kind": "depth"},
    "normal": {"kind": "normal"},
    "attributes": {"kind": "attributes", "num_attributes": 4},
    "left": {"kind": "classification", "num_classes": 3},
}
TASKS = tasks_from_info(INFO)


def _cfg(**kw):
    mc = get_config("ci").model
    for k, v in kw.items():
        setattr(mc, k, v)
    return mc


def _image(b=3, h=32, w=32, seed=0):
    return torch.rand(b, 3, h, w, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("arch", sorted(a for a in MODEL_BUILDERS if a != "mtcrl"))  # mtcrl: below
def test_every_architecture_shapes_and_gradients(arch):
    torch.manual_seed(0)
    model = MODEL_BUILDERS[arch](_cfg(), TASKS)
    out = model(_image())
    p = out["preds"]
    assert p["segmentation"].shape == (3, 5, 32, 32) and p["depth"].shape == (3, 1, 32, 32)
    assert (
        p["normal"].shape == (3, 3, 32, 32) and p["attributes"].shape == (3, 4) and p["left"].shape == (3, 3)
    )
    assert torch.allclose(p["normal"].norm(dim=1), torch.ones(3, 32, 32), atol=1e-4)
    loss = sum(v.float().pow(2).mean() for v in p.values())
    loss.backward()
    shared = {id(q) for q in model.shared_parameters()}
    assert shared and all(
        q.grad is not None
        for q in model.shared_parameters()
        if not (
            arch == "dual_stream"
            and q is model.residual_proj.weight
            or arch == "dual_stream"
            and q is model.residual_proj.bias
        )
    )
    assert all(q.grad is not None and q.grad.abs().sum() > 0 for q in model.heads.parameters() if q.dim() > 1)
    assert len(shared) < len(list(model.parameters()))


@pytest.mark.parametrize("arch", sorted(MODEL_BUILDERS))
def test_every_architecture_runs_channels_last_with_the_same_outputs(arch):
    # the trainer runs the model and its images channels-last (NHWC) on the CPU and CUDA: no reshape of
    # a feature map may assume the NCHW strides (a .view() does), and the function is the same
    torch.manual_seed(0)
    tasks = [t for t in TASKS if t.kind in ("attributes", "classification")] if arch == "mtcrl" else TASKS
    model = MODEL_BUILDERS[arch](_cfg(), tasks).eval()
    x = _image()
    ref = model(x)["preds"]
    model = model.to(memory_format=torch.channels_last)
    out = model(x.contiguous(memory_format=torch.channels_last))["preds"]
    for name, v in ref.items():
        assert torch.allclose(out[name].float(), v.float(), atol=1e-4), name
    sum(v.float().pow(2).mean() for v in out.values()).backward()


def test_dual_stream_outputs_and_shared_parameters():
    model = build_model(_cfg(grounding="hard"), TASKS)
    out = model(_image())
    mc = _cfg()
    assert out["z_s"].shape == (3, mc.semantic_channels, 4, 4)  # output stride 8
    assert out["z_p"].shape == (3, mc.residual_channels)
    assert out["features"] is out["z_s"]
    names = {n for n, p in model.named_parameters() if any(p is q for q in model.shared_parameters())}
    assert any(n.startswith("encoder.") for n in names) and "semantic_proj.weight" in names
    assert "residual_proj.weight" in names and not any(n.startswith(("heads.", "decoder.")) for n in names)
    vanilla = build_model(_cfg(architecture="vanilla"), TASKS)
    vout = vanilla(_image())
    assert "z_p" not in vout and vout["features"].shape[1] == vanilla.encoder.out_channels
    assert not hasattr(vanilla, "decode")
    assert not hasattr(build_model(_cfg(grounding="none"), TASKS), "decode")


def _grads_wrt_encoding(model):
    model.eval()
    enc = model.encode(_image())
    leaves = {k: enc[k].detach().requires_grad_(True) for k in ("z_s", "z_p", "feature_map", "low")}
    enc = {**enc, **leaves, "features": leaves["z_s"]}
    preds = model.predict(enc)
    total = sum(v.pow(2).sum() for v in preds.values())
    grads = torch.autograd.grad(total, list(leaves.values()), allow_unused=True)
    return {k: (0.0 if g is None else float(g.abs().sum())) for k, g in zip(leaves, grads)}


def test_heads_read_z_s_only_and_leaky_heads_leak():
    torch.manual_seed(0)
    g = _grads_wrt_encoding(build_model(_cfg(), TASKS))
    assert g["z_p"] == 0.0 and g["feature_map"] == 0.0  # §3.1: task heads see z_s (and the DeepLab skip)
    assert g["z_s"] > 0 and g["low"] > 0
    torch.manual_seed(0)
    leaky = _grads_wrt_encoding(build_model(_cfg(leaky_heads=True), TASKS))
    assert leaky["z_p"] == 0.0
    assert leaky["feature_map"] > 0  # released-code heads read a projection of the raw backbone map
    # and a residual-stream change reaches only the leaky heads: perturb F in P_s's null space
    torch.manual_seed(0)
    model = build_model(_cfg(leaky_heads=True, semantic_channels=8), TASKS).eval()
    w = model.semantic_proj.weight.detach()[:, :, 0, 0]  # (C_s, C_F), C_F = 32 > C_s = 8
    null = torch.linalg.svd(w, full_matrices=True).Vh[-1]  # direction that P_s ignores
    enc = model.encode(_image())
    enc2 = {**enc, "feature_map": enc["feature_map"] + 5 * null[None, :, None, None]}
    enc2["z_s"] = model.semantic_proj(enc2["feature_map"])
    assert torch.allclose(enc2["z_s"], enc["z_s"], atol=1e-4)
    assert not torch.allclose(model.predict(enc2)["depth"], model.predict(enc)["depth"], atol=1e-4)
    strict = build_model(_cfg(semantic_channels=8), TASKS).eval()
    e = strict.encode(_image())
    e2 = {**e, "feature_map": e["feature_map"] + 5.0}
    assert torch.equal(strict.predict(e2)["depth"], strict.predict(e)["depth"])


def test_sh_shading_matches_spec_constants():
    n = torch.zeros(1, 3, 1, 1)
    n[0, 2] = 1.0  # n = (0, 0, 1)
    for k, value in [(0, SH_C0), (2, SH_C1), (7, SH_C3 * 2.0), (3, 0.0)]:
        light = torch.zeros(1, 3, 9)
        light[0, :, k] = 2.0
        assert torch.allclose(sh_shading(n, light), torch.full((1, 3, 1, 1), 2.0 * value), atol=1e-6)
    # n = (1, 0, 0): Y_22 = 0.546274 (x^2 - y^2); Y_20 = 0.315392 * (3z^2 - 1) is negative -> clamped at 0
    nx = torch.tensor([1.0, 0.0, 0.0]).view(1, 3, 1, 1)
    light = torch.zeros(1, 3, 9)
    light[0, :, 8] = 1.0
    assert torch.allclose(sh_shading(nx, light), torch.full((1, 3, 1, 1), 0.546274), atol=1e-6)
    light = torch.zeros(1, 3, 9)
    light[0, :, 7] = 1.0
    assert sh_shading(nx, light).abs().max() == 0.0


def test_physics_decoder_composition_and_roles():
    torch.manual_seed(0)
    model = build_model(_cfg(grounding="hard"), TASKS).eval()
    out = model(_image())
    dec = model.decode(out["z_s"], out["z_p"])
    assert dec["recon"].shape == (3, 3, 32, 32) and dec["lighting"].shape == (3, 3, 9)
    assert 0.0 <= dec["recon"].min() and dec["recon"].max() <= 1.0
    h, w = dec["albedo"].shape[-2:]
    assert torch.allclose(dec["shading"], sh_shading(dec["normal_phys"], dec["lighting"]))
    assert torch.allclose(dec["recon_linear"], dec["albedo"] * dec["shading"])  # Eq. 13
    up = torch.nn.functional.interpolate(
        dec["recon_linear"], size=(32, 32), mode="bilinear", align_corners=False
    )
    assert torch.allclose(dec["recon"], linear_to_srgb(up), atol=1e-6)
    assert torch.allclose(dec["normal_phys"].norm(dim=1), torch.ones(3, h, w), atol=1e-4)
    # roles: swapping z_p changes albedo and lighting but not the normals (from z_s only)
    perm = torch.tensor([1, 2, 0])
    swapped = model.decode(out["z_s"], out["z_p"][perm])
    assert torch.equal(swapped["normal_phys"], dec["normal_phys"])
    assert torch.allclose(swapped["lighting"], dec["lighting"][perm])
    assert not torch.allclose(swapped["albedo"], dec["albedo"])
    # the colours come from z_p: with one z_p for all, every albedo pixel lies in the convex hull of the
    # same palette, so equal z_p and equal z_s give equal images
    same = model.decode(out["z_s"][:1].expand(3, -1, -1, -1), out["z_p"][:1].expand(3, -1))
    assert torch.allclose(same["recon"][0], same["recon"][2])


def test_decode_gradients_reach_both_streams():
    for grounding in ("hard", "soft"):
        torch.manual_seed(0)
        model = build_model(_cfg(grounding=grounding), TASKS)
        out = model(_image())
        z_s = out["z_s"].detach().requires_grad_(True)
        z_p = out["z_p"].detach().requires_grad_(True)
        dec = model.decode(z_s, z_p, (32, 32))
        assert dec["recon"].shape == (3, 3, 32, 32)
        dec["recon"].sum().backward()
        assert z_s.grad.abs().sum() > 0 and z_p.grad.abs().sum() > 0, grounding
        assert all(p.grad is not None for p in model.decoder.parameters()), grounding


def test_soft_decoder_output_range_and_size_argument():
    model = build_model(_cfg(grounding="soft"), TASKS)
    out = model(_image(h=40, w=24))
    dec = model.decode(out["z_s"], out["z_p"], (40, 24))
    assert dec["recon"].shape == (3, 3, 40, 24)
    assert dec["recon"].min() >= 0 and dec["recon"].max() <= 1
    with pytest.raises(ValueError, match="z_p must be"):
        model.decode(out["z_s"], out["z_p"][:, :3])


def test_mmoe_exposes_experts_and_gates():
    from coremtl_lite.models import build_mmoe

    model = build_mmoe(_cfg(), TASKS, num_experts=4)
    out = model(_image())
    assert out["experts"].shape == (3, 4, _cfg().semantic_channels)
    assert out["expert_maps"].shape[:3] == (3, 4, _cfg().semantic_channels)
    for g in out["gates"].values():
        assert torch.allclose(g.sum(1), torch.ones(3))


def test_mtan_attention_is_task_specific():
    from coremtl_lite.models import build_mtan

    model = build_mtan(_cfg(), TASKS)
    out = model(_image())
    assert set(out["attended"]) == set(INFO)
    assert not torch.allclose(out["attended"]["depth"], out["attended"]["normal"])
    shared = {id(p) for p in model.shared_parameters()}
    assert not any(id(p) in shared for p in model.attention.parameters())


def test_resnet_offline_message_once_and_output_strides(monkeypatch, capsys):
    def offline(arch):
        raise OSError("<urlopen error [Errno -2] Name or service not known>")

    monkeypatch.setattr(encoders, "load_imagenet_state", offline)
    monkeypatch.setattr(encoders, "_WARNED", set())
    enc = encoders.ResNetEncoder("resnet18", pretrained=True)
    encoders.ResNetEncoder("resnet18", pretrained=True)
    err = capsys.readouterr().err
    assert err.count("ImageNet weights for resnet18") == 1 and "randomly initialised" in err
    assert not enc.pretrained_loaded
    low, fmap = enc.eval()(_image(1, 64, 64))
    assert low.shape == (1, 64, 16, 16) and fmap.shape == (1, 512, 2, 2)
    r50 = encoders.ResNetEncoder("resnet50", pretrained=False).eval()
    with torch.no_grad():
        low, fmap = r50(_image(1, 32, 32))
    assert low.shape == (1, 256, 8, 8) and fmap.shape == (1, 2048, 4, 4)  # dilated: output stride 8


def test_resnet_loads_weights_when_available(monkeypatch):
    import torchvision

    state = torchvision.models.resnet18(weights=None).state_dict()
    state = {k: torch.full_like(v, 0.5) if v.is_floating_point() else v for k, v in state.items()}
    monkeypatch.setattr(encoders, "load_imagenet_state", lambda arch: state)
    enc = encoders.ResNetEncoder("resnet18", pretrained=True)
    assert enc.pretrained_loaded and torch.all(enc.stem[0].weight == 0.5)


def test_l2_normalise_and_input_errors():
    x = torch.randn(2, 3, 4, 4)
    assert torch.allclose(l2_normalise(x), torch.nn.functional.normalize(x, dim=1), atol=1e-6)
    assert torch.isfinite(l2_normalise(torch.zeros(1, 3, 2, 2))).all()
    model = build_model(_cfg(), TASKS)
    with pytest.raises(ValueError, match="image batch"):
        model(torch.zeros(3, 32, 32))
    with pytest.raises(ValueError, match="not one of"):
        build_model(type("C", (), {**vars(_cfg()), "architecture": "transformer"})(), TASKS)
    assert math.isfinite(float(model(_image())["z_p"].sum().detach()))


def test_mtcrl_architecture_predicts_vector_tasks_and_rejects_dense_ones():
    vector = [t for t in TASKS if not t.dense]
    model = MODEL_BUILDERS["mtcrl"](_cfg(), vector)
    out = model(_image())
    assert out["preds"]["attributes"].shape == (3, 4) and out["preds"]["left"].shape == (3, 3)
    assert out["features"].shape[:2] == (3, 8)  # K = 8 modules
    with pytest.raises(ValueError, match="dense tasks"):
        MODEL_BUILDERS["mtcrl"](_cfg(), TASKS)


def test_mtcrl_builds_from_the_config_and_takes_vector_inputs():
    from coremtl_lite.config import get_config
    from coremtl_lite.tasks import tasks_from_info

    cfg = get_config("ci", ["model.architecture=mtcrl", "model.num_modules=3", "model.module_dim=5"]).model
    tasks = tasks_from_info(
        {"a": {"kind": "classification", "num_classes": 2}, "b": {"kind": "classification", "num_classes": 4}}
    )
    vec = build_model(cfg, tasks, input_shape=(7,))
    out = vec(torch.randn(6, 7))
    assert out["features"].shape == (6, 3, 5) and out["preds"]["b"].shape == (6, 4)
    img = build_model(cfg, tasks, input_shape=(3, 16, 16))
    assert img(torch.rand(2, 3, 16, 16))["features"].shape == (2, 3, 5)
    torch.manual_seed(0)
    first = build_model(cfg, tasks, input_shape=(7,)).experts.first.weight
    torch.manual_seed(1)  # the init follows the global seed (the trainer's train.seed)
    assert not torch.equal(first, build_model(cfg, tasks, input_shape=(7,)).experts.first.weight)
    with pytest.raises(ValueError, match="needs images"):
        build_model(_cfg(), tasks, input_shape=(7,))


# ------------------------------------------------------------------ the step's fast formulations (blocks)
@pytest.mark.parametrize(
    "shape,size",
    [((2, 7, 16, 16), (64, 64)), ((3, 2, 5, 7), (11, 4)), ((1, 3, 8, 8), (16, 16)), ((2, 1, 9, 6), (9, 13))],
)
def test_upsample_to_is_bilinear_interpolation_values_and_gradients(shape, size):
    torch.manual_seed(0)
    x = torch.randn(*shape, dtype=torch.float64, requires_grad=True)
    g = torch.randn(*shape[:2], *size, dtype=torch.float64)
    ref = torch.nn.functional.interpolate(x, size=size, mode="bilinear", align_corners=False)
    out = upsample_to(x, size)
    assert out.shape == ref.shape
    assert torch.allclose(out, ref, atol=1e-12, rtol=0)
    (gx,) = torch.autograd.grad(out, x, g)
    (gref,) = torch.autograd.grad(ref, x, g)
    assert torch.allclose(gx, gref, atol=1e-12, rtol=0)


def test_upsample_to_float32_close_noop_and_errors():
    x = torch.randn(4, 3, 16, 16)
    ref = torch.nn.functional.interpolate(x, size=(64, 64), mode="bilinear", align_corners=False)
    assert (upsample_to(x, (64, 64)) - ref).abs().max() < 1e-5
    assert upsample_to(x, (16, 16)) is x
    up = BilinearUpsample(2)
    ref2 = torch.nn.functional.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
    assert (up(x) - ref2).abs().max() < 1e-5
    m = bilinear_matrix(4, 8)
    assert m.shape == (8, 4) and torch.allclose(m.sum(dim=1), torch.ones(8))
    with pytest.raises(ValueError, match="upsample_to needs an"):
        upsample_to(torch.randn(3, 16, 16), (32, 32))


def test_channels_first_is_contiguous_and_gives_the_gradient_back_channels_last():
    torch.manual_seed(0)
    x = torch.randn(4, 6, 4, 8, dtype=torch.float64).contiguous(memory_format=torch.channels_last)
    x.requires_grad_()
    pooled = torch.nn.functional.adaptive_avg_pool2d(x, (2, 4))
    out, ref = channels_first(pooled), pooled.contiguous()
    assert out.is_contiguous() and torch.equal(out, ref)
    g = torch.randn(4, 6 * 2 * 4, dtype=torch.float64)
    (gp,) = torch.autograd.grad(out.flatten(1), pooled, g, retain_graph=True)
    (gr,) = torch.autograd.grad(ref.flatten(1), pooled, g, retain_graph=True)
    assert torch.equal(gp, gr)
    assert gp.is_contiguous(memory_format=torch.channels_last) and not gr.is_contiguous(
        memory_format=torch.channels_last
    )  # the layout the pooling's fast backward needs; the plain copy's gradient comes back NCHW
    (gx,) = torch.autograd.grad(out.flatten(1), x, g, retain_graph=True)
    (gxr,) = torch.autograd.grad(ref.flatten(1), x, g)
    assert torch.equal(gx, gxr)
    # differentiable twice (MT-CRL's G-IRM takes a gradient of a gradient through it)
    torch.autograd.gradgradcheck(lambda t: channels_first(t * t).flatten(1), (x,))
    plain = torch.randn(4, 6, 2, 4)  # already contiguous, and other ranks: the plain contiguous()
    assert torch.equal(channels_first(plain), plain)
    assert channels_first(torch.randn(3, 5).t()).is_contiguous()


def test_the_module_experts_give_the_same_values_and_gradients_with_or_without_channels_first(monkeypatch):
    # ConvExperts pools a channels-last map and flattens it; channels_first changes the speed only
    from coremtl_lite.models import mtcrl_model

    x = _image(8, 16, 32).contiguous(memory_format=torch.channels_last)

    def grads(fn):
        monkeypatch.setattr(mtcrl_model, "channels_first", fn)
        experts = mtcrl_model.ConvExperts(3, 4, 8, width=4, seed=0).to(memory_format=torch.channels_last)
        out = experts(x)
        return [out.detach(), *torch.autograd.grad(out.pow(2).sum(), list(experts.parameters()))]

    fast, plain = grads(channels_first), grads(lambda t: t.contiguous())
    assert all(torch.equal(a, b) for a, b in zip(fast, plain))


def test_dilated_depthwise_conv_is_the_plain_convolution():
    torch.manual_seed(0)
    block = ConvBNReLU(6, 6, 3, dilation=2, groups=6)
    conv = block[0]
    assert isinstance(conv, DilatedDepthwiseConv2d)
    assert not isinstance(ConvBNReLU(6, 6, 3, groups=6)[0], DilatedDepthwiseConv2d)  # dilation 1: plain
    assert list(dict(conv.named_parameters())) == ["weight"]  # the state dict of nn.Conv2d(bias=False)
    x = torch.randn(4, 6, 8, 8, requires_grad=True)
    g = torch.randn(4, 6, 8, 8)
    out = conv(x)
    ref = torch.nn.Conv2d.forward(conv, x)
    assert out.is_contiguous() and torch.equal(out, ref)  # forward values identical
    gx, gw = torch.autograd.grad(out, (x, conv.weight), g)
    rx, rw = torch.autograd.grad(ref, (x, conv.weight), g)
    assert torch.allclose(gx, rx, atol=1e-5) and torch.allclose(gw, rw, atol=1e-5)
    with pytest.raises(ValueError, match="dilation >= 2"):
        DilatedDepthwiseConv2d(6, 3, 1, 1, 1)
