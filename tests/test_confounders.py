"""Label-label confounders (MT-CRL §2.1): MultiSEM with T tasks, ConfoundedScenes, their interventions, and
the spurious-correlation study that runs them through the one training loop."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from coremtl_lite.config import ConfigError, get_config
from coremtl_lite.data import MultiSEM, build_splits
from coremtl_lite.data._common import confounded_labels
from coremtl_lite.data.confounded import ConfoundedScenes, confounded_task_names
from coremtl_lite.data.scenes import CLASS_NAMES
from coremtl_lite.data.sem import sem_task_names
from coremtl_lite.diagnostics import spurious
from coremtl_lite.diagnostics.spurious_study import (
    METHODS,
    MODELS,
    STUDIES,
    format_rows,
    mean_rows,
    over_seeds,
    run_spurious,
    stl_vs_mtl,
    study_config,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ------------------------------------------------------------------------------------ the labels
def test_confounded_labels_agree_with_the_first_task_at_rate_m():
    u = torch.rand(40000, 4, generator=torch.Generator().manual_seed(0))
    for m in (0.1, 0.5, 0.9):
        y = confounded_labels(u, m)
        assert y.dtype == torch.int64 and set(y.unique().tolist()) <= {0, 1}
        assert abs(float(y[:, 0].float().mean()) - 0.5) < 0.01
        for t in range(1, 4):
            assert abs(float((y[:, t] == y[:, 0]).float().mean()) - m) < 0.01
    assert torch.equal(confounded_labels(u, 1.0), u[:, :1].lt(0.5).long().expand(-1, 4))
    with pytest.raises(ValueError, match="m_C"):
        confounded_labels(u, 1.5)
    with pytest.raises(ValueError, match=r"\(B, T\)"):
        confounded_labels(u[:, 0], 0.5)


def test_multisem_two_tasks_is_mt_crl_construction():
    """T = 2 keeps the original two-task sampler bit for bit (same labels, same factors)."""
    ds = MultiSEM("train", length=300, seed=3)
    b = ds.get_batch(range(300))
    from coremtl_lite.data import _random

    key = _random.keys(3, _random.stream_id("multisem:train"), torch.arange(300))
    u = _random.uniform(key, 2)
    y_a = (u[:, 0] < 0.5).long()
    y_b = torch.where(u[:, 1] < 0.9, y_a, 1 - y_a)
    assert torch.equal(b["task_a"], y_a) and torch.equal(b["task_b"], y_b)
    eps = _random.normal(key ^ 0x3C6EF372, 10).view(-1, 2, 5)
    ref = torch.stack([2 * y_a - 1, 2 * y_b - 1], 1).float()[:, :, None] * ds.mu[None] + eps
    assert torch.equal(b["image"], ref.reshape(-1, 10))
    assert ds.input_shape == (10,) and list(ds.task_info) == ["task_a", "task_b"]


def test_multisem_many_tasks():
    ds = MultiSEM("train", length=6000, seed=0, num_tasks=5, dim=3, m_train=0.8)
    b = ds.get_batch(range(6000))
    names = sem_task_names(5)
    assert names == ["task_a", "task_b", "task_c", "task_d", "task_e"] and list(ds.task_info) == names
    assert b["image"].shape == (6000, 15) and ds.input_shape == (15,)
    for t in names[1:]:
        assert abs(float((b[t] == b["task_a"]).float().mean()) - 0.8) < 0.02
    masks = torch.stack([ds.causal_mask[t] for t in names])
    assert torch.equal(masks.sum(0), torch.ones(15, dtype=torch.long))  # the factors partition the input
    for i, t in enumerate(names):  # each factor is centred on +-mu_t with the sign of its own label
        proj = b["image"][:, ds.causal_mask[t]] @ ds.mu[i]
        assert float(((proj > 0).long() == b[t]).float().mean()) > 0.85
    assert b["factors"]["semantic"]["agree"].shape == (6000, 4)
    assert torch.equal(ds[11]["task_c"], b["task_c"][11])
    assert MultiSEM("val", length=10, m_val=0.3).m_c == 0.3 and MultiSEM("val", length=10).m_c == 0.9
    with pytest.raises(ValueError, match="num_tasks"):
        MultiSEM(num_tasks=0)
    with pytest.raises(ValueError, match="m_val"):
        MultiSEM(m_val=2.0)


def test_build_splits_passes_the_confounder_settings():
    cfg = get_config(
        "ci",
        [
            "data.dataset=multisem",
            "data.num_tasks=4",
            "data.tasks=task_a,task_d",
            "data.m_train=0.8",
            "data.m_val=0.6",
            "data.m_test=0.2",
        ],
    )
    sp = build_splits(cfg.data, seed=0)
    assert sp.train.num_tasks == 4 and (sp.train.m_c, sp.val.m_c, sp.test["target"].m_c) == (0.8, 0.6, 0.2)
    assert sp.test["source"].m_c == 0.8
    for bad, match in (
        ("data.m_val=1.5", "m_val"),
        ("data.confounded_shapes=cone", "two shapes"),
        ("data.num_tasks=0", "num_tasks"),
    ):
        with pytest.raises(ConfigError, match=match):
            get_config("ci", [bad])


def test_joined_dataset_keeps_the_order_and_the_first_dataset_attributes():
    from coremtl_lite.data.loading import JoinedDataset

    a, b = MultiSEM("train", length=5, seed=0), MultiSEM("val", length=4, seed=0, m_val=0.2)
    joined = JoinedDataset(a, b)
    assert len(joined) == 9 and joined.causal_mask is a.causal_mask and joined.input_shape == (10,)
    got = joined.get_batch([7, 1, 5, 0])
    ref_a, ref_b = a.get_batch([1, 0]), b.get_batch([2, 0])
    assert torch.equal(
        got["image"],
        torch.stack([ref_b["image"][0], ref_a["image"][0], ref_b["image"][1], ref_a["image"][1]]),
    )
    assert torch.equal(got["factors"]["semantic"]["f_a"][1], ref_a["factors"]["semantic"]["f_a"][0])
    assert torch.equal(joined.get_batch([2])["task_a"], a.get_batch([2])["task_a"])
    assert torch.equal(joined[6]["image"], b[1]["image"])
    with pytest.raises(IndexError, match="out of range"):
        joined.get_batch([9])
    cfg = get_config("ci", ["data.dataset=multisem", "data.tasks=task_a,task_b", "data.train_on_val=true"])
    sp = build_splits(cfg.data, seed=0)
    assert len(sp.train) == cfg.data.train_size + cfg.data.val_size and len(sp.val) == cfg.data.val_size


# ------------------------------------------------------------------------------- ConfoundedScenes
def test_confounded_scenes_labels_follow_the_confounder():
    for m in (0.9, 0.1):
        ds = ConfoundedScenes(m_c=m, size=16, length=3000, seed=1)
        b = ds.get_batch(range(3000))
        assert list(ds.task_info) == ["has_cone", "has_box"]
        agree = float((b["has_cone"] == b["has_box"]).float().mean())
        assert abs(agree - m) < 0.025, agree
        assert abs(float(b["has_cone"].float().mean()) - 0.5) < 0.03
        sem = b["factors"]["semantic"]
        assert (sem["num_objects"] >= 2).all() and (sem["valid"].sum(1) == sem["num_objects"]).all()
        # labels are the semantic factors; the objects are nearly always visible in the segmentation too
        for task, shape in (("has_cone", "cone"), ("has_box", "box")):
            visible = (b["segmentation"] == CLASS_NAMES.index(shape)).flatten(1).any(1).long()
            assert float((visible == b[task]).float().mean()) > 0.97


def test_confounded_scenes_toggle_is_an_intervention_on_one_label():
    ds = ConfoundedScenes(size=16, length=200, seed=0)
    sem = ds.sample_semantic(torch.arange(200))
    res = ds.sample_residual(torch.arange(200), sem)
    before = ds.labels(sem)
    for task, other in (("has_cone", "has_box"), ("has_box", "has_cone")):
        after = ds.labels(ds.toggle(sem, task))
        assert torch.equal(after[task], 1 - before[task]) and torch.equal(after[other], before[other])
        x = ds.render(sem, res)
        x_do = ds.render(ds.toggle(sem, task), res)
        changed = (x["image"] - x_do["image"]).abs().amax(1) > 0
        # only pixels whose geometry changed change (residual factors, lights and noise are kept)
        same_geometry = (x["segmentation"] == x_do["segmentation"]) & (
            x["depth"][:, 0] == x_do["depth"][:, 0]
        )
        assert changed.any() and not (changed & same_geometry).any()
    with pytest.raises(KeyError, match="has_cone"):
        ds.toggle(sem, "has_torus")


def test_confounded_scenes_masks_and_errors():
    ds = ConfoundedScenes(shapes=("torus", "cylinder"), size=16, length=8)
    b = ds.get_batch(range(8))
    masks = ds.causal_masks_for(b)
    assert set(masks) == {"has_torus", "has_cylinder"} and masks["has_torus"].shape == (8, 1, 16, 16)
    assert torch.equal(~masks["has_torus"][:, 0], b["segmentation"] == CLASS_NAMES.index("cylinder"))
    with pytest.raises(ValueError, match="unknown shapes"):
        confounded_task_names(("cone", "sphere"))
    with pytest.raises(ValueError, match="two different"):
        ConfoundedScenes(shapes=("cone", "cone"))
    with pytest.raises(ValueError, match="m_c"):
        ConfoundedScenes(m_c=-0.1)
    cfg = get_config(
        "ci", ["data.dataset=confounded_scenes", "data.tasks=has_cone,has_box", "data.m_test=0.2"]
    )
    sp = build_splits(cfg.data, seed=0)
    assert (sp.train.m_c, sp.val.m_c, sp.test["source"].m_c, sp.test["target"].m_c) == (0.9, 0.5, 0.9, 0.2)
    with pytest.raises(ValueError, match="evaluation domains"):
        build_splits(
            get_config("ci", ["data.dataset=confounded_scenes", "data.eval_domains=colored"]).data, 0
        )


# ----------------------------------------------------------------------------------- diagnostics
def test_per_sample_masks_and_chance_level():
    class Left(nn.Module):  # reads the left half only
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(3 * 4 * 4, 2)

        def forward(self, x):
            return {"preds": {"t": self.lin(x[..., :4].flatten(1))}}

    batch = {"image": torch.rand(3, 3, 4, 8), "t": torch.tensor([0, 1, 1])}
    per_sample = torch.zeros(3, 1, 4, 8, dtype=torch.bool)  # batch of 3 = channels: still one mask per sample
    per_sample[0, :, :, :4] = True  # sample 0: left causal; samples 1 and 2: nothing causal
    model = Left()
    sal = spurious.input_saliency(model, batch, "t")
    share_12 = float(sal[1:].sum() / sal.sum())
    assert spurious.spurious_score(model, batch, "t", per_sample) == pytest.approx(share_12, rel=1e-6)
    assert spurious.chance_spurious_score(per_sample, batch["image"]) == pytest.approx(5 / 6)
    fixed = torch.zeros(3, 4, 8, dtype=torch.bool)  # a (C, H, W) mask shared by the samples
    fixed[:, :, :4] = True
    assert spurious.spurious_score(model, batch, "t", fixed) == 0.0
    assert spurious.chance_spurious_score(torch.ones(4, 8, dtype=torch.bool), batch["image"]) == 0.0
    with pytest.raises(ValueError, match="does not fit"):
        spurious.spurious_score(model, batch, "t", torch.ones(5, 4, 8, dtype=torch.bool))
    with pytest.raises(ValueError, match="does not fit"):
        spurious.spurious_score(model, batch, "t", torch.ones(3, 2, 4, 8, dtype=torch.bool))


def test_intervention_sensitivity_zero_for_a_blind_model_and_positive_for_a_reader():
    ds = ConfoundedScenes(size=16, length=64, seed=0)

    class Constant(nn.Module):
        def __init__(self):
            super().__init__()
            self.bias = nn.Parameter(torch.tensor([0.3, -0.2]))

        def forward(self, x):
            return {"preds": {t: self.bias.expand(x.shape[0], 2) for t in ds.task_names}}

    class Brightness(nn.Module):  # a "has" logit from the whole image: any object change moves it
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.tensor(200.0))

        def forward(self, x):
            z = self.w * (x.mean((1, 2, 3)) - 0.4)
            return {"preds": {t: torch.stack([torch.zeros_like(z), z], 1) for t in ds.task_names}}

    assert spurious.intervention_sensitivity(Constant(), ds, ds.task_names)["mean"] == 0.0
    reader = spurious.intervention_sensitivity(Brightness(), ds, ds.task_names)
    assert reader["has_cone"] > 0.01 and reader["has_box"] > 0.01
    with pytest.raises(TypeError, match="toggle"):
        spurious.intervention_sensitivity(Constant(), MultiSEM(length=4), ["task_a"])


# ------------------------------------------------------------------------------------- the study
def test_study_configs_are_valid_for_every_combination():
    for study in STUDIES:
        for method in METHODS:
            for model in ("shared_bottom", "modules"):
                cfg = study_config(study, model, method, profile="ci")
                assert cfg.data.eval_domains == () and cfg.optim.min_lr_ratio == 1.0
        if study != "multisem":  # images: the CORE-MTL and vanilla encoders apply too
            assert study_config(study, "core_mtl", profile="cpu").model.architecture == "dual_stream"
    assert study_config(
        "digit_pairs", "modules", "MT-CRL (G-IRM only)", profile="ci"
    ).train.method_options == {"lambda_decor": 0.0, "lambda_sps": 0.0, "lambda_bal": 0.0}
    assert study_config("multisem", profile="cpu").data.train_size == 512
    assert set(MODELS) == {"shared_bottom", "modules", "vanilla", "core_mtl"}
    for kind, args in (
        ("study", ("nope",)),
        ("model", ("multisem", "nope")),
        ("method", ("multisem", "modules", "x")),
    ):
        with pytest.raises(ValueError, match=f"unknown {kind}"):
            study_config(*args, profile="ci")


def test_run_spurious_rows_and_determinism():
    cfg = study_config(
        "multisem", profile="ci", overrides=["data.num_tasks=3", "data.tasks=task_a,task_b,task_c"]
    )
    run = run_spurious(cfg)
    row = run.row
    assert {"acc_train", "acc_source", "acc_target", "rho_spur", "rho_chance", "rho_task_c"} <= set(row)
    assert all(0.0 <= v <= 1.0 for k, v in row.items() if k != "sel_epoch")
    assert row["acc_chance"] == 0.5 and 1 <= row["sel_epoch"] <= cfg.optim.epochs
    assert row["rho_chance"] == pytest.approx(2 / 3)
    assert row["acc_source"] > 0.7  # the in-distribution split is easy ...
    assert row["acc_target"] < row["acc_source"]  # ... the confounder shift costs accuracy
    again = over_seeds(run_spurious, cfg, [0, 0])  # the same seed twice: the same numbers, and their mean
    assert {k: v for k, v in again.items() if not k.endswith("_std")} == pytest.approx(row, abs=0)
    assert all(again[f"{k}_std"] == 0.0 for k in row)
    other = run_spurious(
        study_config(
            "multisem",
            profile="ci",
            overrides=["data.num_tasks=3", "data.tasks=task_a,task_b,task_c", "train.seed=1"],
        )
    ).row
    assert other != row
    assert mean_rows([{"a": 1.0, "b": 2.0}, {"a": 3.0}]) == {"a": 2.0}
    assert mean_rows([{"a": 1.0}, {"a": 3.0}], with_std=True) == {"a": 2.0, "a_std": pytest.approx(2**0.5)}
    with pytest.raises(ValueError, match="at least one"):
        mean_rows([])


def test_format_rows_lines_up_and_marks_missing_values():
    text = format_rows({"EW": {"a": 0.5, "b": 0.25}, "MT-CRL": {"a": 0.125}}, label="method")
    lines = text.splitlines()
    assert lines[0].split() == ["method", "a", "b"] and len({len(line) for line in lines}) == 1
    assert set(lines[1]) == {"-"}  # the rule under the header
    assert lines[2].split() == ["EW", "0.500", "0.250"] and lines[3].split() == ["MT-CRL", "0.125", "-"]


def test_stl_vs_mtl_and_mtcrl_on_confounded_scenes():
    table = stl_vs_mtl(study_config("multisem", profile="ci"))
    assert set(table) == {"MTL", "STL"} and set(table["MTL"]) == set(table["STL"])
    run = run_spurious(study_config("confounded_scenes", "modules", "MT-CRL (G-IRM only)", profile="ci"))
    assert run.trainer.method.name == "mtcrl" and 0.0 <= run.row["do_other"] <= 1.0
    assert any("method/mtcrl/girm" in r for r in run.trainer.history.steps)
    assert all(math.isfinite(r["loss/total"]) for r in run.trainer.history.steps)


def test_per_task_selection_picks_each_tasks_best_validation_epoch():
    """The same rule for MTL and STL: every task is scored at the epoch of its own best validation accuracy."""
    from coremtl_lite.diagnostics.spurious_study import PerTaskSelection
    from coremtl_lite.train import Trainer

    cfg = study_config("multisem", profile="ci")
    picker = PerTaskSelection(cfg.data.tasks)
    trainer = Trainer(cfg, callbacks=[picker])
    trainer.fit()
    for t in cfg.data.tasks:
        accs = [r["val"][t]["acc"] for r in trainer.history.epochs]
        assert picker.epoch[t] == 1 + accs.index(max(accs))  # the first epoch reaching the maximum
        trainer.model.load_state_dict(picker.state[t])
        assert trainer.evaluate(split="val", use_best=False)["val"][t]["acc"] == pytest.approx(max(accs))
    last = run_spurious(cfg, selection="last").row
    assert last["sel_epoch"] == cfg.optim.epochs
    with pytest.raises(ValueError, match="selection"):
        run_spurious(cfg, selection="best")


def test_digit_pairs_factor_gradients_are_the_chain_rule():
    """d <w, image> / d factor from factor_gradients equals a finite difference through the image formation."""
    from coremtl_lite.data.digits import DigitPairs

    ds = DigitPairs("test", size=8, length=4, seed=0)
    b = ds.get_batch(torch.arange(4))
    w = torch.randn(b["image"].shape, generator=torch.Generator().manual_seed(0))
    grads = ds.factor_gradients(b, w)
    assert {k: tuple(v.shape) for k, v in grads.items()} == {
        "left_digit": (4, 64),
        "right_digit": (4, 64),
        "foreground_rgb": (4, 3),
        "background_rgb": (4, 3),
    }
    sem, res = b["factors"]["semantic"], b["factors"]["residual"]
    left, right = ds._images[sem["left_image"]], ds._images[sem["right_image"]]
    fg, bg = res["foreground_rgb"], res["background_rgb"]
    torch.testing.assert_close(ds.compose(left, right, fg, bg), b["image"])
    eps = 1e-3
    bumped = fg.clone()
    bumped[:, 1] += eps
    fd = ((ds.compose(left, right, bumped, bg) - b["image"]) * w).flatten(1).sum(1) / eps
    torch.testing.assert_close(fd, grads["foreground_rgb"][:, 1], rtol=1e-2, atol=1e-3)
    with pytest.raises(ValueError, match="input_grad has shape"):
        ds.factor_gradients(b, w[:, :, :4])


def test_digit_pairs_spurious_score_counts_colour_and_other_digit_as_non_causal():
    """A left-digit head that reads only right-half pixels (away from the seam) scores rho = 1: on the
    factors, none of its gradient reaches the left digit; the half-image mask would have said 0."""
    from coremtl_lite.data.digits import DigitPairs

    class RightHalfReader(nn.Module):
        def forward(self, x):
            z = x[..., 10:].flatten(1).sum(1, keepdim=True)
            return {"preds": {"left": z.expand(-1, 10) * torch.arange(10.0)}}

    ds = DigitPairs("test", size=8, length=16, seed=0)
    b = ds.get_batch(torch.arange(16))
    assert spurious.factor_spurious_score(RightHalfReader(), ds, b, "left") == pytest.approx(1.0)
    scores = spurious.spurious_scores_for(RightHalfReader(), ds, b, ["left"])
    assert scores["left"] == pytest.approx(1.0) and 0.0 < scores["chance"] < 1.0
    assert ds.causal_factors == {"left": ("left_digit",), "right": ("right_digit",)}
