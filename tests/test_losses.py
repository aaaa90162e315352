"""Tests of coremtl_lite.losses: task losses, grounding losses, CFA and the objective (Eq. 11-16)."""

import warnings

import pytest
import torch
import torch.nn.functional as F
from _train_helpers import ReadBacks

from coremtl_lite import get_config
from coremtl_lite.data import ShadedScenes
from coremtl_lite.losses import (
    SSIMLoss,
    build_objective,
    build_perceptual,
    cfa_loss,
    depth_loss,
    frozen_batchnorm,
    normal_loss,
    physics_regularisers,
    reconstruction_loss,
    segmentation_loss,
)
from coremtl_lite.losses import reconstruction as rec_mod
from coremtl_lite.losses.reconstruction import albedo_normal_covariance, albedo_tv, grey_shading, ssim
from coremtl_lite.models import build_model
from coremtl_lite.tasks import tasks_from_info


@pytest.fixture(scope="module")
def setup():
    cfg = get_config("ci")
    ds = ShadedScenes(size=32, length=8, seed=3)
    batch = ds.get_batch(list(range(6)))
    tasks = tasks_from_info(ds.task_info, cfg.data.tasks)
    return cfg, batch, tasks


def _model(cfg, tasks, seed=0, **overrides):
    torch.manual_seed(seed)
    mc = cfg.model
    for k, v in overrides.items():
        setattr(mc, k, v)
    return build_model(mc, tasks)


# ------------------------------------------------------------------------------------------ task losses
def test_segmentation_loss_ignores_void():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 4, 3, 3, generator=g, requires_grad=True)
    target = torch.randint(0, 4, (2, 3, 3), generator=g)
    target[0, 0, 0] = -1
    valid = target >= 0
    expected = F.cross_entropy(logits.permute(0, 2, 3, 1)[valid], target[valid])
    assert segmentation_loss(logits, target).item() == pytest.approx(expected.item(), rel=1e-6)
    all_void = segmentation_loss(logits, torch.full_like(target, -1))
    all_void.backward()
    assert all_void.item() == 0.0 and torch.isfinite(logits.grad).all()


def test_depth_and_normal_losses_hand_computed():
    pred = torch.tensor([[[[1.0, 5.0], [2.0, 2.0]]]], requires_grad=True)
    gt = torch.tensor([[[[2.0, 0.0], [2.0, 4.0]]]])
    assert depth_loss(pred, gt).item() == pytest.approx((1 + 0 + 2) / 3)
    depth_loss(pred, gt).backward()
    assert pred.grad[0, 0, 0, 1] == 0  # invalid pixel gets no gradient
    n_gt = torch.zeros(1, 3, 1, 3)
    n_gt[0, 2, 0, :2] = 1.0  # third pixel invalid
    n_pred = torch.zeros(1, 3, 1, 3)
    n_pred[0, 2, 0, 0] = 3.0  # cos 1
    n_pred[0, 0, 0, 1] = 1.0  # cos 0
    n_pred[0, 1, 0, 2] = 1.0
    assert normal_loss(n_pred, n_gt).item() == pytest.approx(1 - (1 + 0) / 2)


# ------------------------------------------------------------------------------------ perceptual / rec
def test_ssim_matches_pytorch_msssim():
    from pytorch_msssim import ssim as ref

    g = torch.Generator().manual_seed(0)
    a = torch.rand(3, 3, 24, 20, generator=g)
    b = (a + 0.2 * torch.rand(3, 3, 24, 20, generator=g)).clamp(0, 1)
    assert ssim(a, b).item() == pytest.approx(ref(a, b, data_range=1.0).item(), abs=1e-5)
    assert ssim(a, a).item() == pytest.approx(1.0, abs=1e-5)
    assert SSIMLoss()(a, b).item() == pytest.approx(1 - ssim(a, b).item())


def test_lpips_path_with_random_backbone():
    loss = rec_mod.LPIPSLoss("alex", pnet_rand=True)
    assert loss.name == "lpips" and not any(p.requires_grad for p in loss.parameters())
    g = torch.Generator().manual_seed(0)
    a = torch.rand(2, 3, 32, 32, generator=g, requires_grad=True)
    b = torch.rand(2, 3, 32, 32, generator=g)
    d = loss(a, b)
    d.backward()
    assert d.item() > 0 and a.grad.abs().sum() > 0
    assert loss(b, b).item() == pytest.approx(0.0, abs=1e-6)


def test_perceptual_fallback_when_lpips_weights_unavailable(monkeypatch):
    def fail(*args, **kwargs):
        raise OSError("<urlopen error offline>")

    monkeypatch.setattr(rec_mod, "LPIPSLoss", fail)
    monkeypatch.setattr(rec_mod, "_LPIPS_FAILED", [])
    with pytest.warns(RuntimeWarning, match="LPIPS backbone weights are unavailable"):
        p = build_perceptual("auto")
    assert isinstance(p, SSIMLoss)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # said once: a second build is silent
        assert isinstance(build_perceptual("auto"), SSIMLoss)
    with pytest.raises(RuntimeError, match="could not load"):
        build_perceptual("lpips")
    assert build_perceptual("none") is None


def test_physics_regularisers_values():
    albedo = torch.full((2, 3, 8, 8), 0.4)
    grey = torch.full((2, 3, 8, 8), 0.7)
    normal = F.normalize(torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0)), dim=1)
    assert albedo_tv(albedo).item() == 0.0
    assert grey_shading(grey).item() == 0.0
    assert albedo_normal_covariance(albedo, normal).item() == pytest.approx(0.0, abs=1e-12)
    stripes = albedo.clone()
    stripes[..., ::2] = 0.6
    assert albedo_tv(stripes).item() == pytest.approx(0.2 * 7 / 7)  # every horizontal step is 0.2
    tinted = grey.clone()
    tinted[:, 0] = 1.0
    assert grey_shading(tinted).item() > 0
    # albedo = x-component of the normal: maximal covariance
    assert albedo_normal_covariance(normal[:, :1].expand(-1, 3, -1, -1), normal).item() > 0.01
    terms = physics_regularisers(
        {"albedo": albedo, "shading": grey, "normal_phys": normal},
        {"normal": normal.repeat_interleave(2, -1).repeat_interleave(2, -2)},
    )  # 16x16 gt
    assert set(terms) == {"albedo_tv", "grey_shading", "albedo_normal_cov", "geometry"}
    assert terms["geometry"].item() == pytest.approx(0.0, abs=1e-5)


def test_reconstruction_loss_at_render_resolution():
    image = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    from coremtl_lite.shading import linear_to_srgb, srgb_to_linear

    target_lin = F.adaptive_avg_pool2d(srgb_to_linear(image), (4, 4))
    perfect = {"recon": torch.zeros_like(image), "recon_linear": target_lin}
    loss, parts = reconstruction_loss(perfect, image, perceptual=None)
    assert loss.item() == pytest.approx(0.0, abs=1e-7) and parts["rec_l1"] == pytest.approx(0.0, abs=1e-7)
    off = {"recon": linear_to_srgb(srgb_to_linear(image) + 0.1), "recon_linear": srgb_to_linear(image) + 0.1}
    loss, _ = reconstruction_loss(off, image, perceptual=None)
    assert loss.item() == pytest.approx(0.1, abs=1e-6)
    with pytest.raises(ValueError, match="differ"):
        reconstruction_loss({"recon": torch.zeros(2, 3, 4, 4)}, image)


# ------------------------------------------------------------------------------------------- objective
def test_vanilla_model_has_no_extra_loss(setup):
    cfg, batch, tasks = setup
    model = _model(cfg, tasks, architecture="vanilla")
    obj = build_objective(cfg.loss, tasks, perceptual=None)
    out = obj(model, batch, 0.5, torch.Generator().manual_seed(0))
    assert out.extra_loss is None and out.logs == {} and out.extra_terms == {} and out.train_tasks
    assert set(out.task_losses) == {t.name for t in tasks}


def test_task_weights_scale_task_losses(setup):
    cfg, batch, tasks = setup
    model = _model(cfg, tasks, architecture="vanilla")
    model.eval()
    plain = build_objective(cfg.loss, tasks, perceptual=None)(model, batch, 0.5, torch.Generator())
    lc = get_config("ci", ['loss.task_weights={"depth": 3.0}']).loss
    weighted = build_objective(lc, tasks, perceptual=None)(model, batch, 0.5, torch.Generator())
    assert weighted.task_losses["depth"].item() == pytest.approx(
        3 * plain.task_losses["depth"].item(), rel=1e-6
    )
    assert weighted.task_losses["normal"].item() == pytest.approx(
        plain.task_losses["normal"].item(), rel=1e-6
    )


def test_core_objective_terms_and_gradients(setup):
    cfg, batch, tasks = setup
    model = _model(cfg, tasks, architecture="dual_stream", grounding="hard")
    lc = get_config("ci", ["loss.cfa_prob=1.0", "loss.cfa_start=0", "loss.cfa_max_rec_ratio=1e9"]).loss
    obj = build_objective(lc, tasks, perceptual=SSIMLoss())
    out = obj(model, batch, 1.0, torch.Generator().manual_seed(0))
    assert out.extra_loss is not None and out.extra_loss.dim() == 0
    assert set(out.extra_terms) == {"rec", "ind", "cfa"} and out.train_tasks
    assert out.extra_loss.item() == pytest.approx(sum(v.item() for v in out.extra_terms.values()), rel=1e-6)
    for key in (
        "rec",
        "cka",
        "ind",
        "cfa",
        "cfa_applied",
        "lambda_ind",
        "rec_l1",
        "rec_ssim",
        "rec_geometry",
    ):
        assert key in out.logs and isinstance(out.logs[key], float)
    assert out.logs["cfa_applied"] == 1.0
    total = sum(out.task_losses.values()) + out.extra_loss
    total.backward()
    for name, p in model.named_parameters():
        if name.startswith("decoder.") or name.startswith("residual_proj") or name.startswith("heads"):
            continue
        assert p.grad is not None, name
    assert model.residual_proj.weight.grad.abs().sum() > 0  # through CKA and the decoder
    assert model.decoder.palette.weight.grad.abs().sum() > 0


def test_cfa_leaves_batchnorm_statistics_untouched(setup):
    cfg, batch, tasks = setup
    for form in ("consistency", "task"):
        model = _model(cfg, tasks, architecture="dual_stream", grounding="hard")
        model.train()
        with torch.no_grad():
            out = model(batch["image"])
        before = {k: v.clone() for k, v in model.state_dict().items() if "running" in k or "num_batches" in k}
        modes = {n: m.training for n, m in model.named_modules()}
        loss, perm = cfa_loss(model, batch, out, tasks, {}, form, torch.Generator().manual_seed(1))
        loss.backward()
        after = {k: v for k, v in model.state_dict().items() if k in before}
        assert all(torch.equal(before[k], after[k]) for k in before), form
        assert {n: m.training for n, m in model.named_modules()} == modes  # modes restored
        assert sorted(perm.tolist()) == list(range(batch["image"].shape[0]))
        assert torch.isfinite(loss) and loss.item() > 0
        assert all(p.grad is None for p in model.decoder.parameters())  # the generator gets no gradient


def test_frozen_batchnorm_restores_modes():
    net = torch.nn.Sequential(torch.nn.BatchNorm2d(2), torch.nn.BatchNorm2d(2))
    net.train()
    net[1].eval()
    with frozen_batchnorm(net):
        assert not net[0].training and not net[1].training
    assert net[0].training and not net[1].training


def test_schedule_fractions_warmup_ramp_and_cfa_start(setup):
    cfg, batch, tasks = setup
    lc = get_config(
        "ci",
        [
            "loss.decomposition_warmup=0.2",
            "loss.ind_ramp=0.4",
            "loss.lambda_ind=2.0",
            "loss.cfa_start=0.5",
            "loss.cfa_prob=1.0",
            "loss.cfa_max_rec_ratio=1e9",
        ],
    ).loss
    obj = build_objective(lc, tasks, perceptual=None)
    model = _model(cfg, tasks, architecture="dual_stream", grounding="hard")
    ps = [0.0, 0.1, 0.2, 0.3, 0.4, 0.6, 0.9]
    assert [obj.lambda_ind(p, model) for p in ps] == pytest.approx([0.0, 0.0, 0.0, 0.5, 1.0, 2.0, 2.0])
    assert [obj.cfa_active(p) for p in (0.0, 0.49, 0.5, 1.0)] == [False, False, True, True]
    assert [obj.decomposition_stage(p, model) for p in (0.0, 0.19, 0.2)] == [True, True, False]
    no_decoder = _model(
        cfg, tasks, architecture="dual_stream", grounding="none"
    )  # no stage 0: the ramp starts at 0
    assert not obj.decomposition_stage(0.0, no_decoder)
    assert obj.lambda_ind(0.2, no_decoder) == pytest.approx(1.0)
    vanilla = _model(cfg, tasks, architecture="vanilla")  # baselines have no decomposition stage
    assert (
        not obj.decomposition_stage(0.0, vanilla) and obj(vanilla, batch, 0.0, torch.Generator()).train_tasks
    )
    assert obj(model, batch, 0.6, torch.Generator().manual_seed(0)).logs["cfa_applied"] == 1.0


def test_stage0_sends_no_task_gradient_and_leaves_the_heads_untouched(setup):
    cfg, batch, tasks = setup
    lc = get_config("ci", ["loss.decomposition_warmup=0.5"]).loss
    obj = build_objective(lc, tasks, perceptual=None)
    model = _model(cfg, tasks, architecture="dual_stream", grounding="hard")
    model.train()
    heads_before = {k: v.clone() for k, v in model.heads.state_dict().items()}
    out = obj(model, batch, 0.1, torch.Generator().manual_seed(0))
    assert not out.train_tasks and out.logs["stage0"] == 1.0 and out.logs["lambda_ind"] == 0.0
    assert all(not v.requires_grad for v in out.task_losses.values())  # values for the logs, no graph
    assert all(torch.isfinite(v) and v.item() > 0 for v in out.task_losses.values())
    out.extra_loss.backward()
    assert all(p.grad is None for p in model.heads.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.encoder.parameters())
    after = model.heads.state_dict()
    assert all(torch.equal(heads_before[k], after[k]) for k in heads_before)  # BN statistics included
    assert model.heads.training  # the heads' mode is restored
    later = obj(model, batch, 0.6, torch.Generator().manual_seed(0))
    assert later.train_tasks and later.logs["stage0"] == 0.0
    assert all(v.requires_grad for v in later.task_losses.values())


def test_cfa_is_skipped_while_the_decoder_is_below_its_bar(setup):
    cfg, batch, tasks = setup
    model = _model(cfg, tasks, architecture="dual_stream", grounding="hard")
    for bar, applied in ((0.0, 0.0), (1e9, 1.0)):
        lc = get_config("ci", ["loss.cfa_prob=1.0", "loss.cfa_start=0", f"loss.cfa_max_rec_ratio={bar}"]).loss
        out = build_objective(lc, tasks, perceptual=None)(model, batch, 1.0, torch.Generator().manual_seed(0))
        assert out.logs["rec_ratio"] > 0 and out.logs["cfa_applied"] == applied
        assert ("cfa" in out.extra_terms) == bool(applied)
    # an untrained decoder does worse than each image's flat mean colour: the default bar keeps CFA off
    lc = get_config("ci", ["loss.cfa_prob=1.0", "loss.cfa_start=0"]).loss
    out = build_objective(lc, tasks, perceptual=None)(model, batch, 1.0, torch.Generator().manual_seed(0))
    assert out.logs["rec_ratio"] > lc.cfa_max_rec_ratio and out.logs["cfa_applied"] == 0.0


def test_cfa_probability_zero_never_applies(setup):
    cfg, batch, tasks = setup
    lc = get_config("ci", ["loss.cfa_prob=0.0", "loss.cfa_start=0"]).loss
    model = _model(cfg, tasks, architecture="dual_stream", grounding="soft")
    obj = build_objective(lc, tasks, perceptual=None)
    g = torch.Generator().manual_seed(0)
    assert all(obj(model, batch, 1.0, g).logs["cfa_applied"] == 0.0 for _ in range(3))


def test_objective_is_deterministic_given_the_generator(setup):
    cfg, batch, tasks = setup
    lc = get_config(
        "ci", ["loss.cfa_prob=0.5", "loss.cfa_start=0", "loss.cfa_max_rec_ratio=1e9", "loss.cfa_form=task"]
    ).loss

    def run(seed):
        model = _model(cfg, tasks, seed=0, architecture="dual_stream", grounding="hard")
        obj = build_objective(lc, tasks, perceptual=SSIMLoss())
        g = torch.Generator().manual_seed(seed)
        vals = []
        for _ in range(6):
            out = obj(model, batch, 1.0, g)
            vals.append((out.extra_loss.item(), out.logs["cfa_applied"]))
        return vals

    a, b = run(7), run(7)
    assert a == b  # same generator seed: the same CFA draws, permutations and losses
    assert {v[1] for v in a} == {0.0, 1.0}  # p = 0.5: both outcomes occur in 6 steps for this seed
    assert run(8) != a


def test_objective_errors(setup):
    cfg, batch, tasks = setup
    model = _model(cfg, tasks, architecture="vanilla")
    obj = build_objective(cfg.loss, tasks, perceptual=None)
    with pytest.raises(KeyError, match="no labels for task 'depth'"):
        obj(model, {k: v for k, v in batch.items() if k != "depth"}, 0, torch.Generator())


def test_class_balance_weights_give_every_class_the_same_weight():
    from coremtl_lite.losses.reconstruction import class_balance_weights

    seg = torch.zeros(1, 4, 4, dtype=torch.long)  # 13 ground pixels, 2 of class 3, 1 void
    seg[0, 0, 0] = seg[0, 0, 1] = 3
    seg[0, 3, 3] = -1
    w = class_balance_weights({"segmentation": seg}, (4, 4))
    assert w[0, 3, 3] == 0.0
    assert float(w[seg == 0].sum()) == pytest.approx(float(w[seg == 3].sum()))
    assert float(w.sum()) == pytest.approx(15.0)  # mean weight 1 over the valid pixels
    assert class_balance_weights({"image": torch.zeros(1, 3, 4, 4)}, (4, 4)) is None
    half = class_balance_weights({"segmentation": seg}, (2, 2))  # subsampled to the render resolution
    assert half.shape == (1, 2, 2)
    # balanced L1: an error on the 2 object pixels weighs as much as the same error on the 13 ground pixels
    image = torch.full((1, 3, 4, 4), 0.5)
    from coremtl_lite.shading import srgb_to_linear

    target_lin = srgb_to_linear(image)
    wrong_obj, wrong_ground = target_lin.clone(), target_lin.clone()
    wrong_obj[..., seg[0] == 3] += 0.1
    wrong_ground[..., seg[0] == 0] += 0.1
    batch = {"segmentation": seg}
    a, _ = reconstruction_loss(
        {"recon": image, "recon_linear": wrong_obj}, image, batch, None, balance="class"
    )
    b, _ = reconstruction_loss(
        {"recon": image, "recon_linear": wrong_ground}, image, batch, None, balance="class"
    )
    assert a.item() == pytest.approx(b.item(), rel=1e-5)
    plain, _ = reconstruction_loss({"recon": image, "recon_linear": wrong_obj}, image, batch, None)
    assert plain.item() < a.item()


def test_reconstruction_parts_are_read_back_from_the_device_at_once(setup, monkeypatch):
    # every part of L_rec is a float, read back in one go: no float(tensor) per part (each one waits
    # for a GPU), and the same floats as one float() per part
    cfg, batch, tasks = setup
    model = _model(cfg, tasks, architecture="dual_stream", decoder="physics")
    with torch.no_grad():
        enc = model.encode(batch["image"])
        decoded = model.decode(enc["z_s"], enc["z_p"], tuple(batch["image"].shape[-2:]))
    assert "albedo" in decoded

    perceptual = build_perceptual("ssim")
    with ReadBacks() as reads:
        _, parts = reconstruction_loss(decoded, batch["image"], batch, perceptual)
    assert reads.items == 0
    assert {"rec_l1", "rec_ratio", "rec_ssim", "rec_geometry"} <= set(parts)
    assert all(type(v) is float for v in parts.values())
    monkeypatch.setattr(rec_mod, "as_floats", lambda d: {k: float(v) for k, v in d.items()})
    _, one_by_one = reconstruction_loss(decoded, batch["image"], batch, perceptual)
    assert parts == one_by_one
