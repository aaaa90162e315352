"""Diagnostics of paper §4.4 on constructed cases whose answers are known.

Toy models here are tiny hand-made modules obeying the model contract (CONTRIBUTING.md); stream
functions are plain callables, so "a z_s that ignores r" can be built exactly (from the labels).
"""

import json
import math
from collections import namedtuple

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from coremtl_lite.data import ShadedScenes
from coremtl_lite.diagnostics import (
    GradientCosineLogger,
    ReconProbe,
    color_jitter,
    cosine_matrix,
    counterfactual_errors,
    counterfactual_grid,
    cross_domain_pair,
    estimate_leakage,
    factor_targets,
    fit_residual_scale,
    gradient_cosines,
    linear_probes,
    model_streams,
    residual_vector,
    residual_w1,
    robustness_ratio,
    true_counterfactual_grid,
)
from coremtl_lite.diagnostics.counterfactuals import swap_gain
from coremtl_lite.diagnostics.leakage import interpolate_residual
from coremtl_lite.diagnostics.robustness import mean_pairwise_sqdist

SIZE = 16
Task = namedtuple("Task", "name loss")


def seg_loss(pred, target):
    return F.cross_entropy(pred, target, ignore_index=-1)


def l1_loss(pred, target):
    return (pred - target).abs().mean()


TASKS = [Task("segmentation", seg_loss), Task("depth", l1_loss), Task("normal", l1_loss)]


class ToyDual(nn.Module):
    """A dual-stream toy: z_s (B, 4, H, W), z_p (B, 3). Heads read z_s channels 0-1 only and the decoder
    reads z_s channels 2-3 (+ z_p), so task and reconstruction gradients on z_s have disjoint support."""

    def __init__(self, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.enc = nn.Conv2d(3, 6, 3, padding=1)
        self.ps = nn.Conv2d(6, 4, 1)
        self.pp = nn.Conv2d(6, 3, 1)
        self.seg = nn.Conv2d(2, 7, 1)
        self.depth = nn.Conv2d(2, 1, 1)
        self.normal = nn.Conv2d(2, 3, 1)
        self.dec = nn.Conv2d(2 + 3, 3, 1)

    def forward(self, image):
        f = torch.relu(self.enc(image))
        z_s, z_p = self.ps(f), self.pp(f).mean(dim=(2, 3))
        h = z_s[:, :2]
        preds = {
            "segmentation": self.seg(h),
            "depth": self.depth(h),
            "normal": F.normalize(self.normal(h), dim=1),
        }
        return {"preds": preds, "features": z_s, "z_s": z_s, "z_p": z_p}

    def decode(self, z_s, z_p):
        zp = z_p[:, :, None, None].expand(-1, -1, *z_s.shape[-2:])
        return {"recon": torch.sigmoid(self.dec(torch.cat([z_s[:, 2:], zp], 1)))}


class ToyVanilla(nn.Module):
    """A vanilla toy: one encoder map read by every head; no decoder."""

    def __init__(self, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.enc = nn.Conv2d(3, 4, 3, padding=1)
        self.seg = nn.Conv2d(4, 7, 1)
        self.depth = nn.Conv2d(4, 1, 1)
        self.normal = nn.Conv2d(4, 3, 1)

    def forward(self, image):
        f = torch.relu(self.enc(image))
        preds = {
            "segmentation": self.seg(f),
            "depth": self.depth(f),
            "normal": F.normalize(self.normal(f), dim=1),
        }
        return {"preds": preds, "features": f}


@pytest.fixture(scope="module")
def scenes():
    return ShadedScenes("source", size=SIZE, length=64, seed=3)


@pytest.fixture(scope="module")
def target():
    return ShadedScenes("target", size=SIZE, length=64, seed=3)


def label_blind(batch):
    """z_s = the depth label (a function of s only: ignores r exactly), z_p = the image."""
    return batch["depth"].float(), batch["image"].float()


def identity_split(batch):
    return batch["image"].float(), batch["image"].float()


# ---------------------------------------------------------------------------- robustness ratio (Table 3)
def test_color_jitter_is_seeded_in_range_and_strong():
    x = torch.rand(32, 3, 8, 8)
    a, b, c = color_jitter(x, seed=1), color_jitter(x, seed=1), color_jitter(x, seed=2)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.shape == x.shape and a.min() >= 0 and a.max() <= 1
    grey = ((a[:, 0] - a[:, 1]).abs().amax((1, 2)) < 1e-6) & ((a[:, 1] - a[:, 2]).abs().amax((1, 2)) < 1e-6)
    assert 6 <= int(grey.sum()) <= 26  # greyscale with p = 0.5
    # brightness alone: every image scaled by one factor in [0.6, 1.4]
    y = torch.full((64, 3, 4, 4), 0.5)
    br = color_jitter(y, 0, contrast=(1, 1), saturation=(1, 1), hue=(0, 0), grayscale_p=0.0)
    factors = br[:, 0, 0, 0] / 0.5
    assert factors.min() >= 0.6 - 1e-6 and factors.max() <= 1.4 + 1e-6 and factors.std() > 0.15


def test_identity_split_has_ratio_one(scenes):
    batch = scenes.get_batch(range(16))
    jittered = dict(batch, image=color_jitter(batch["image"], seed=0))
    res = robustness_ratio(identity_split, batch, jittered)
    assert res.ratio == pytest.approx(1.0, abs=1e-9)
    assert res.raw_ratio == pytest.approx(1.0, abs=1e-9)
    assert 0 < res.delta_s < 2


def test_label_blind_semantic_stream_gives_unbounded_ratio(scenes, target):
    src, tgt = cross_domain_pair(scenes, target, range(16))
    res = robustness_ratio(label_blind, src, tgt)
    assert res.delta_s_raw == 0.0 and res.delta_p > 0 and math.isinf(res.ratio)
    batch = scenes.get_batch(range(16))
    res2 = robustness_ratio(label_blind, batch, dict(batch, image=color_jitter(batch["image"], seed=4)))
    assert math.isinf(res2.ratio)


def test_ratio_is_scale_free_but_raw_ratio_is_not(scenes, target):
    src, tgt = cross_domain_pair(scenes, target, range(16))

    def leaky(batch):  # z_s = blurred image (still moves with r), z_p = image
        img = batch["image"].float()
        return F.avg_pool2d(img, 4), img

    def leaky_scaled(batch):
        zs, zp = leaky(batch)
        return 0.1 * zs, 10.0 * zp

    a, b = robustness_ratio(leaky, src, tgt), robustness_ratio(leaky_scaled, src, tgt)
    assert a.ratio == pytest.approx(b.ratio, rel=1e-6)
    assert b.raw_ratio == pytest.approx(a.raw_ratio * 1e4, rel=1e-6)


def test_mean_pairwise_sqdist_matches_brute_force():
    z = torch.randn(7, 3, 2)
    flat = z.reshape(7, -1).double()
    brute = np.mean([float(((flat[i] - flat[j]) ** 2).sum()) for i in range(7) for j in range(7) if i != j])
    assert mean_pairwise_sqdist(z) == pytest.approx(brute, rel=1e-10)


def test_cross_domain_pair_checks_and_shares_labels(scenes, target):
    src, tgt = cross_domain_pair(scenes, target, [0, 5])
    assert torch.equal(src["segmentation"], tgt["segmentation"]) and not torch.equal(
        src["image"], tgt["image"]
    )
    with pytest.raises(ValueError, match="seed"):
        cross_domain_pair(scenes, ShadedScenes("target", size=SIZE, length=64, seed=4), [0])


def test_model_streams_dual_and_vanilla_splits(scenes):
    batch = scenes.get_batch(range(4))
    zs, zp = model_streams(ToyDual())(batch)
    assert zs.shape == (4, 4, SIZE, SIZE) and zp.shape == (4, 3)
    van = ToyVanilla()
    zs, zp = model_streams(van, "pooled")(batch)
    assert zs.shape == (4, 4, SIZE, SIZE) and torch.allclose(zp, zs.mean(dim=(2, 3)))
    zs, zp = model_streams(van, "channels")(batch)
    assert zs.shape == (4, 2, SIZE, SIZE) and zp.shape == (4, 2)
    zs, _ = model_streams(van, pool_semantic=True)(batch)
    assert zs.shape == (4, 4)
    with pytest.raises(ValueError, match="vanilla_split"):
        model_streams(van, "halves")


# ---------------------------------------------------------------------------------- leakage (Eq. 8)
def test_label_blind_stream_has_zero_leakage(scenes, target):
    for donors in (None, target):
        res = estimate_leakage(label_blind, scenes, range(12), donor_scenes=donors)
        assert res.sup == 0.0 and res.summary["leak_q90"] == 0.0
        assert res.summary["p_sens_mean"] > 0.05  # the image does move with r
        assert len(res.ratios_s) == 36  # 12 scenes x 3 steps


def test_leakage_of_a_linear_residual_code_is_constant_and_exact(scenes, target):
    r_ref = [
        residual_vector(scenes.sample_factors(range(12))["residual"]),
        residual_vector(target.sample_residual(range(12))),
    ]
    scale = fit_residual_scale(r_ref)

    def linear_code(batch):  # z_s = the normalised residual vector itself: Lipschitz constant known
        z = scale(residual_vector(batch["factors"]["residual"])).float()
        return z, z

    res = estimate_leakage(linear_code, scenes, range(12), donor_scenes=target, scale=scale)
    z0 = scale(residual_vector(scenes.sample_factors(range(12))["residual"]))
    expected = 1.0 / math.sqrt(float(((z0 - z0.mean(0)) ** 2).sum(1).mean()))
    np.testing.assert_allclose(res.ratios_s, expected, rtol=1e-4)
    assert res.sup == pytest.approx(expected, rel=1e-4)


def test_interpolate_residual_keeps_absent_slots_and_endpoints(scenes, target):
    f = scenes.sample_factors([0, 1])
    d = target.sample_residual([0, 1], f["semantic"])
    same = interpolate_residual(f["residual"], d, 0.0, f["semantic"])
    full = interpolate_residual(f["residual"], d, 1.0, f["semantic"], discrete_from_donor=True)
    assert torch.allclose(same["albedo"], f["residual"]["albedo"])
    present = torch.cat([f["semantic"]["valid"], torch.ones(2, 1, dtype=torch.bool)], 1)
    assert torch.allclose(full["albedo"][present], d["albedo"][present])
    assert torch.equal(full["albedo"][~present], f["residual"]["albedo"][~present])
    assert torch.equal(full["texture_kind"], d["texture_kind"])


def test_residual_w1_sees_the_domain_shift(scenes, target):
    within = residual_w1(scenes, scenes, range(32))
    across = residual_w1(scenes, target, range(32))
    assert across > within > 0


# ------------------------------------------------------------------------------------------ probes
def test_probes_recover_the_factors_each_stream_carries():
    train = ShadedScenes("target", size=SIZE, length=256, seed=5).get_batch(range(160))
    test = ShadedScenes("target", size=SIZE, length=256, seed=5).get_batch(range(160, 256))

    def oracle(batch):
        t = factor_targets(batch, 7)
        return torch.from_numpy(t["semantic"][0]).float(), torch.from_numpy(t["residual"][0]).float()

    res = linear_probes(oracle, train, test, num_classes=7).table()
    assert res["z_s"]["semantic"] > 0.99 and res["z_p"]["residual"] > 0.99
    assert res["z_s"]["residual"] < 0.3 and res["z_p"]["semantic"] < 0.3


# ------------------------------------------------------------------------------ counterfactuals (Fig. 2)
def test_counterfactual_grid_rows_keep_content_columns_lend_residual(scenes):
    model = ToyDual()
    images = scenes.get_batch(range(3))["image"]
    grid = counterfactual_grid(model, images)
    assert grid.shape == (3, 3, 3, SIZE, SIZE)
    out = model(images)
    assert torch.allclose(grid[1, 1], model.decode(out["z_s"], out["z_p"])["recon"][1], atol=1e-6)
    assert torch.allclose(grid[0, 2], model.decode(out["z_s"][:1], out["z_p"][2:3])["recon"][0], atol=1e-6)
    assert not torch.allclose(grid[0, 0], grid[0, 2])
    with pytest.raises(TypeError, match="decode"):
        counterfactual_grid(ToyVanilla(), images)


def test_true_counterfactual_grid_is_the_intervention(scenes):
    idx = [0, 1, 2]
    grid = true_counterfactual_grid(scenes, idx)
    batch = scenes.get_batch(idx)
    for i in range(3):
        assert torch.allclose(grid[i, i], batch["image"][i], atol=1e-6)
    f = scenes.sample_factors(idx)
    one = scenes.render(
        {k: v[:1] for k, v in f["semantic"].items()}, {k: v[2:3] for k, v in f["residual"].items()}
    )
    assert torch.allclose(grid[0, 2], one["image"][0], atol=1e-6)


def test_swap_gain_on_perfect_and_donor_blind_models(scenes):
    truth = true_counterfactual_grid(scenes, [0, 1, 2])
    perfect = swap_gain(truth, truth)
    assert perfect["l1_with_swap"] == 0.0 and perfect["l1_without_swap"] > 0 and perfect["ratio"] == 0.0
    blind = truth[torch.arange(3), torch.arange(3)][:, None].expand_as(truth).clone()  # ignores the donor
    assert swap_gain(blind, truth)["ratio"] == pytest.approx(1.0)


def test_counterfactual_errors_known_values(scenes):
    grid = true_counterfactual_grid(scenes, [0, 1])
    same = counterfactual_errors(grid, grid)
    assert same["l1"] == 0.0 and same["l1_matrix"].shape == (2, 2)
    assert len(same) == 8  # l1 + one perceptual distance, four keys each
    perc = [k for k in same if k.endswith("_diagonal") and k != "l1_diagonal"][0].removesuffix("_diagonal")
    assert abs(same[perc]) < 1e-3
    shifted = (grid + 0.1).clamp(max=1.0)
    err = counterfactual_errors(shifted, grid, perceptual=None)
    assert err["l1"] == pytest.approx(float((shifted - grid).abs().mean()), rel=1e-6) and err["l1"] > 0.05
    assert err["l1_diagonal"] > 0 and err["l1_offdiagonal"] > 0


# ------------------------------------------------------------------------- gradient orthogonality (Fig. 4-5)
def test_cosine_matrix_of_constructed_gradients():
    g = {
        "a": torch.tensor([1.0, 0.0, 0.0]),
        "b": torch.tensor([0.0, 2.0, 0.0]),
        "c": torch.tensor([-1.0, 0.0, 0.0]),
    }
    names, mat = cosine_matrix(g)
    assert names == ["a", "b", "c"]
    np.testing.assert_allclose(mat, [[1, 0, -1], [0, 1, 0], [-1, 0, 1]], atol=1e-12)


def test_disjoint_streams_give_exactly_orthogonal_task_and_recon_gradients(scenes):
    """Prop. 2.5 in its extreme form: heads and decoder read disjoint channels of z_s -> cosine 0."""
    batch = scenes.get_batch(range(6))
    res = gradient_cosines(ToyDual(), TASKS, batch)
    assert res["recon_source"] == "decoder"
    assert res["task_recon"] == 0.0 and all(res[f"task_recon/{t.name}"] == 0.0 for t in TASKS)
    assert res["task_task"].shape == (3, 3) and abs(res["task_task"][0, 1]) > 1e-4  # shared channels


def test_probe_recon_gradient_on_a_vanilla_model(scenes):
    batch = scenes.get_batch(range(6))
    model = ToyVanilla()
    probe = ReconProbe(4, seed=0)
    res = gradient_cosines(model, TASKS, batch, probe=probe, probe_steps=5)
    assert res["recon_source"] == "probe" and -1 <= res["task_recon"] <= 1 and res["task_recon"] != 0.0
    assert all(p.grad is None for p in model.parameters())  # the model's gradients are left untouched
    with pytest.raises(ValueError, match="ReconProbe"):
        gradient_cosines(model, TASKS, batch)


def test_gradient_cosine_logger_as_a_trainer_callback(scenes):
    batch = scenes.get_batch(range(4))

    class FakeTrainer:
        def __init__(self, model):
            self.model, self.tasks = model, TASKS

    for model, source in ((ToyDual(), "decoder"), (ToyVanilla(), "probe")):
        log = GradientCosineLogger(batch, every=2, probe_steps=2)
        trainer = FakeTrainer(model)
        for step in range(5):
            log.on_step_end(trainer, {"step": step, "epoch": 0})
        log.on_epoch_end(trainer, history=None)
        steps, values = log.series()
        assert steps == [0, 2, 4, 5] and len(values) == 4
        assert log.records[0]["recon_source"] == source
        assert log.mean_task_task().shape == (3, 3)
        copy = GradientCosineLogger(batch)
        copy.load_state_dict(json.loads(json.dumps(log.state_dict())))
        assert copy.series() == log.series() and copy.names == ["segmentation", "depth", "normal"]
        np.testing.assert_allclose(copy.mean_task_task(), log.mean_task_task())


# ------------------------------------------------------------------------------------ summary tables
def test_summary_tables_on_toy_models(scenes, target):
    from coremtl_lite.diagnostics.summary import (
        PAPER_TABLE3,
        format_rows,
        leakage_rows,
        probe_rows,
        robustness_rows,
    )

    models = {"dual": ToyDual(), "vanilla": ToyVanilla()}
    rob = robustness_rows(models, scenes, target, range(8))
    assert [(r["model"], r["setting"]) for r in rob] == [
        ("dual", "intra"),
        ("dual", "cross"),
        ("vanilla", "intra"),
        ("vanilla", "cross"),
    ]
    assert all(r["ratio"] > 0 and r["paper ratio"] == PAPER_TABLE3[r["setting"]][2] for r in rob)
    leak = leakage_rows(models, TASKS, scenes, target, range(8))
    assert all(
        r["L̂ sup (→target)"] > 0 and r["L̂·W1"] == pytest.approx(r["L̂ sup (→target)"] * r["W1(r)"])
        for r in leak
    )
    assert leak[0]["gap"] == pytest.approx(leak[0]["R_target"] - leak[0]["R_source"])
    probes = probe_rows(models, scenes.get_batch(range(32)), scenes.get_batch(range(32, 64)), num_classes=7)
    assert len(probes) == 4 and {r["stream"] for r in probes} == {"z_s", "z_p"}
    text = format_rows(rob)
    assert text.splitlines()[0].split()[:2] == ["model", "setting"] and len(text.splitlines()) == 6
    assert "inf" in format_rows([{"a": math.inf}])


# ------------------------------------------------------------------------------------ load or train
def test_load_or_train_trains_once_then_loads(tmp_path):
    from coremtl_lite.diagnostics.pretrained import load_or_train, probe_batch, run_dir, tutorial_config

    over = [
        "data.image_size=16",
        "data.train_size=8",
        "data.val_size=8",
        "data.test_size=8",
        "data.batch_size=8",
        "optim.epochs=1",
        "data.eval_domains=source",
    ]
    cfg = tutorial_config("core_mtl", "ci", over)
    assert run_dir(cfg, "m") != run_dir(tutorial_config("ew", "ci", over), "m")
    assert run_dir(cfg, "m") == run_dir(tutorial_config("core_mtl", "ci", over), "m")
    log = GradientCosineLogger(probe_batch(cfg, 4), every=1, probe_steps=1)
    first = load_or_train(cfg, tmp_path / "run", callbacks=[log], verbose=False)
    assert not first.loaded and first.epoch == 1 and len(log.records) == 2  # one step + the epoch end
    log2 = GradientCosineLogger(probe_batch(cfg, 4), every=1)
    again = load_or_train(cfg, tmp_path / "run", callbacks=[log2], verbose=False)
    assert again.loaded and log2.series() == log.series()
    for (k, a), b in zip(first.model.state_dict().items(), again.model.state_dict().values()):
        assert torch.equal(a, b), k


class ShiftToMean(ToyDual):
    """z_s = the image, z_p = its mean colour; decode recolours z_s to the mean colour z_p, and the heads
    read the image: a hand-made 'decoder' whose reconstruction is exact and whose swap moves only the
    mean colour."""

    def forward(self, image):
        out = super().forward(image)
        return {**out, "z_s": image, "z_p": image.mean(dim=(2, 3))}

    def decode(self, z_s, z_p):
        return {"recon": z_s - z_s.mean(dim=(2, 3), keepdim=True) + z_p[:, :, None, None]}


def test_grounding_scores_on_a_hand_made_decoder(scenes):
    from coremtl_lite.diagnostics.counterfactuals import grounding_scores, psnr

    assert psnr(torch.zeros(2, 3, 4, 4), torch.full((2, 3, 4, 4), 0.1)) == pytest.approx(20.0)
    idx = [0, 1, 2, 3]
    mean_image = scenes.get_batch(range(32))["image"].mean(0)
    s = grounding_scores(ShiftToMean(), scenes, idx, mean_image)
    x = scenes.get_batch(idx)["image"]
    assert s["psnr_recon"] > 100  # exact reconstruction (up to float rounding)
    assert s["psnr_own_mean"] == pytest.approx(
        psnr(x.mean(dim=(2, 3), keepdim=True).expand_as(x), x), rel=1e-6
    )
    truth = scenes.render(scenes.sample_semantic(idx), scenes.sample_residual([1, 2, 3, 0]))["image"]
    donor = scenes.get_batch([1, 2, 3, 0])["image"]
    cf = (x - x.mean(dim=(2, 3), keepdim=True) + donor.mean(dim=(2, 3), keepdim=True)).clamp(0, 1)
    assert s["psnr_cf_true"] == pytest.approx(psnr(cf, truth), rel=1e-5)
    assert s["cf_gain_db"] == pytest.approx(s["psnr_cf_true"] - psnr(x, truth), rel=1e-5)
    assert s["recon_colour_err"] == pytest.approx(
        float((x.mean((2, 3)) - truth.mean((2, 3))).abs().mean()), rel=1e-5
    )
    assert all(0.0 <= s[k] <= 1.0 for k in ("cf_miou_content", "recon_miou_content", "cf_miou_donor"))
    untrained = grounding_scores(ToyDual(), scenes, idx, mean_image)
    assert all(math.isfinite(v) for v in untrained.values())
    with pytest.raises(TypeError, match="decode"):
        grounding_scores(ToyVanilla(), scenes, idx, mean_image)
