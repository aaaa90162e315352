"""The training loop's pieces on tiny hand-made models: schedule, history, checkpoints, exact resume,
the non-finite guard, model selection, the held-out hook and method parameters."""

from __future__ import annotations

import hashlib
import math
import pickle
import random

import numpy as np
import pytest
import torch
from _train_helpers import TinyObjective, tiny_trainer

from coremtl_lite.config import get_config
from coremtl_lite.train import (
    CheckpointError,
    DistBatchNorm,
    History,
    NonFiniteLossError,
    Trainer,
    atomic_write,
    load_checkpoint,
    lr_factor,
    relative_score,
    save_checkpoint,
)
from coremtl_lite.train.checkpoint import rng_state, set_rng_state


# ------------------------------------------------------------------------------------ schedule
def test_lr_factor_warmup_then_cosine_to_min_ratio():
    total, warm, r = 20, 5, 0.01
    f = [lr_factor(s, total, warm, r) for s in range(total)]
    assert f[:5] == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0])  # linear warm-up
    assert f[5] == pytest.approx(1.0)  # cosine starts at the base lr
    assert f[-1] == pytest.approx(r)  # ... and ends at min_lr_ratio x lr
    mid = 5 + (total - 5 - 1) / 2  # half-way through the decay: r + (1 - r) / 2
    assert lr_factor(int(mid), total, warm, r) == pytest.approx(
        r + (1 - r) * 0.5 * (1 + math.cos(math.pi * 7 / 14))
    )
    assert all(a >= b for a, b in zip(f[5:], f[6:]))  # monotone decay
    assert lr_factor(100, total, warm, r) == pytest.approx(r)
    assert lr_factor(0, 10, 0, 0.1) == 1.0  # no warm-up
    with pytest.raises(ValueError, match="total_steps"):
        lr_factor(0, 0, 0, 0.1)
    with pytest.raises(ValueError, match="min_lr_ratio"):
        lr_factor(0, 10, 0, 1.5)


# ------------------------------------------------------------------------------------- history
def test_history_series_and_json_round_trip():
    h = History(
        steps=[{"step": 0, "loss/total": 2.0}, {"step": 1, "loss/total": 1.5, "obj/cka": 0.3}],
        epochs=[
            {
                "epoch": 1,
                "train/depth": 0.4,
                "val": {"depth": {"abs_err": 0.5}},
                "test": {"target": {"depth": {"abs_err": 0.7}}},
            }
        ],
    )
    assert h.step_series("loss/total") == ([0, 1], [2.0, 1.5])
    assert h.step_series("obj/cka") == ([1], [0.3])
    assert h.epoch_series("train/depth") == ([1], [0.4])
    assert h.epoch_series("val/depth/abs_err") == ([1], [0.5])
    assert h.epoch_series("test/target/depth/abs_err") == ([1], [0.7])
    assert h.epoch_series("test/source/depth/abs_err") == ([], [])
    assert h.last("loss/total") == 1.5 and math.isnan(h.last("nope"))
    assert h.step_keys() == ["step", "loss/total", "obj/cka"]
    assert History.from_json(h.to_json()) == h
    with pytest.raises(ValueError, match="steps"):
        History.from_dict({"epochs": []})


# ---------------------------------------------------------------------------------- checkpoints
@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_checkpoint_round_trip_and_refuses_pickled_code(tmp_path):
    state = {"w": torch.arange(4.0), "nested": {"a": [1, 2.5, "x"], "t": (1, None)}, "s": "cfg"}
    save_checkpoint(tmp_path / "c.pt", state)
    back = load_checkpoint(tmp_path / "c.pt")
    assert torch.equal(back["w"], state["w"]) and back["nested"] == state["nested"] and back["s"] == "cfg"
    assert list(tmp_path.iterdir()) == [tmp_path / "c.pt"]  # no temporary file left behind

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"version": 1, "x": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="evil.pt"):
        load_checkpoint(tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(pickle.dumps({"version": 99}))
    with pytest.raises(CheckpointError, match="junk.pt"):
        load_checkpoint(tmp_path / "junk.pt")


def test_atomic_write_keeps_old_file_when_writing_fails(tmp_path):
    path = tmp_path / "f.bin"
    atomic_write(path, lambda fh: fh.write(b"good"))

    def broken(fh):
        fh.write(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(path, broken)
    assert path.read_bytes() == b"good"
    assert [p.name for p in tmp_path.iterdir()] == ["f.bin"]


def test_rng_state_round_trip():
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    state = rng_state()
    a = (random.random(), np.random.rand(), torch.rand(2))
    set_rng_state(state)
    b = (random.random(), np.random.rand(), torch.rand(2))
    assert a[0] == b[0] and a[1] == b[1] and torch.equal(a[2], b[2])


# ------------------------------------------------------------------------------------- the loop
def test_fit_records_schedule_and_learns(tmp_path):
    tr = tiny_trainer(tmp_path, "optim.epochs=4", "optim.lr=0.02")
    h = tr.fit()
    assert tr.steps_per_epoch == 4 and tr.step == 16 and len(h.steps) == 16 and len(h.epochs) == 4
    assert tr.objective.progress_seen == [s / 16 for s in range(16)]  # the schedule's clock: step / total
    for rec in h.steps:  # per-step lr follows the schedule exactly
        assert rec["lr"] == pytest.approx(0.02 * lr_factor(rec["step"], 16, 4, tr.cfg.optim.min_lr_ratio))
    _, train = h.epoch_series("train/total")
    assert train[-1] < 0.8 * train[0]  # it learns
    assert {"val", "test", "score", "seconds"} <= set(h.epochs[-1])
    assert set(h.epochs[-1]["test"]) == {"source", "target"}
    assert (tmp_path / "last.pt").is_file() and (tmp_path / "best.pt").is_file()
    assert History.from_json((tmp_path / "history.json").read_text()) == h


@pytest.mark.parametrize("flag", [True, False])
def test_channels_last_on_the_cpu_follows_the_config(tmp_path, flag):
    # train.channels_last puts the model's conv weights in NHWC on the CPU too (faster steps), and off
    # keeps NCHW; a step runs either way
    tr = tiny_trainer(tmp_path, "optim.epochs=1", f"train.channels_last={str(flag).lower()}")
    assert tr.channels_last is flag
    conv = tr.model.encoder[0].weight
    assert conv.is_contiguous(memory_format=torch.channels_last) is flag  # a 3x3 conv: the layouts differ
    assert conv.is_contiguous() is not flag
    tr.fit()
    assert tr.step > 0


def test_exact_resume_matches_uninterrupted_run(tmp_path):
    straight = tiny_trainer(tmp_path / "a")
    straight.fit()
    first = tiny_trainer(tmp_path / "b")
    first.fit(stop_at_epoch=1)
    assert first.epoch == 1 and first.step == 4
    torch.manual_seed(12345)  # scramble the global RNGs: the checkpoint must restore them
    random.seed(5)
    resumed = tiny_trainer(tmp_path / "b")
    resumed.fit(resume=True)
    assert resumed.epoch == 2 and resumed.step == straight.step
    for (name, p), q in zip(straight.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(p, q), name
    keys = ["loss/total", "loss/segmentation", "loss/depth", "loss/normal", "obj/noise", "lr", "grad_norm"]
    for a, b in zip(straight.history.steps, resumed.history.steps):
        assert [a[k] for k in keys] == [b[k] for k in keys]
    assert straight.history.epochs[-1]["val"] == resumed.history.epochs[-1]["val"]
    assert straight.best_epoch == resumed.best_epoch
    # the optimiser moments too
    sa, sb = straight.optimizer.state_dict()["state"], resumed.optimizer.state_dict()["state"]
    assert all(torch.equal(sa[i]["exp_avg_sq"], sb[i]["exp_avg_sq"]) for i in sa)


def test_resume_refuses_a_different_config(tmp_path):
    tiny_trainer(tmp_path).fit(stop_at_epoch=1)
    other = tiny_trainer(tmp_path, "optim.lr=0.5")
    with pytest.raises(CheckpointError, match="optim"):
        other.fit(resume=True)


class _NaNAt:
    """Wraps an objective and turns the depth loss into NaN at global step ``at``."""

    def __init__(self, inner, at: int):
        self.inner, self.at, self.calls = inner, at, 0

    def __call__(self, model, batch, progress, generator):
        out = self.inner(model, batch, progress, generator)
        if self.calls == self.at:
            out.task_losses["depth"] = out.task_losses["depth"] * float("nan")
        self.calls += 1
        return out


def test_non_finite_loss_stops_and_keeps_last_checkpoint(tmp_path):
    tr = tiny_trainer(tmp_path)
    tr.objective = _NaNAt(tr.objective, at=6)  # the 3rd step of epoch 2
    tr.fit(stop_at_epoch=1)
    before = hashlib.sha256((tmp_path / "last.pt").read_bytes()).hexdigest()
    params = [p.detach().clone() for p in tr.model.parameters()]
    with pytest.raises(NonFiniteLossError, match="depth") as info:
        tr.fit()
    assert info.value.step == 6 and info.value.epoch == 1 and math.isnan(info.value.values["loss/depth"])
    assert hashlib.sha256((tmp_path / "last.pt").read_bytes()).hexdigest() == before
    assert load_checkpoint(tmp_path / "last.pt")["step"] == 4
    # steps 4 and 5 of epoch 2 ran, the NaN step did not touch the weights
    assert tr.step == 6 and all(torch.isfinite(p).all() for p in tr.model.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(params, tr.model.parameters()))


def test_model_selection_uses_validation_and_best_weights(tmp_path):
    tr = tiny_trainer(tmp_path, "optim.epochs=3", "optim.lr=0.02")
    h = tr.fit()
    scores = [e["score"] for e in h.epochs]

    trivial = tr.evaluate_trivial(split="val")["val"]  # the fixed reference of the score
    assert scores == [relative_score(e["val"], trivial, tr.directions()) for e in h.epochs]
    assert tr.best_epoch == 1 + int(np.argmax(scores)) and tr.best_score == max(scores)
    best_val = h.epochs[tr.best_epoch - 1]["val"]
    assert tr.evaluate(split="val", use_best=True)["val"] == best_val
    assert tr.evaluate(split="val", use_best=False)["val"] == h.epochs[-1]["val"]
    assert load_checkpoint(tmp_path / "best.pt")["epoch"] == tr.best_epoch
    # the selected weights can be put into the model itself (for saliency and other diagnostics)
    best = tr._best_state
    model = tr.load_selected_weights()
    assert model is tr.model and all(torch.equal(v, best[k]) for k, v in model.state_dict().items())
    assert tr.evaluate(split="val", use_best=False)["val"] == best_val


def test_relative_score_is_signed_by_direction():
    dirs = {"seg": {"miou": True}, "depth": {"err": False, "rel": False}}
    ref = {"seg": {"miou": 0.5}, "depth": {"err": 2.0, "rel": 0.0}}
    res = {"seg": {"miou": 0.6}, "depth": {"err": 1.0, "rel": 0.3}}
    # seg: +20 %, depth: -(1 - 2)/2 = +50 % (rel skipped: reference 0) -> mean 35
    assert relative_score(res, ref, dirs) == pytest.approx(35.0)
    assert relative_score(ref, ref, dirs) == 0.0
    with pytest.raises(ValueError, match="no metric"):
        relative_score({"x": {}}, ref, dirs)


def test_callbacks_see_steps_and_epochs_and_can_stop(tmp_path):
    class Recorder:
        def __init__(self):
            self.steps, self.epochs, self.started, self.ended = [], [], 0, 0

        def on_fit_start(self, trainer):
            self.started += 1

        def on_step_end(self, trainer, record):
            self.steps.append(record["step"])
            if record["step"] == 5:
                trainer.should_stop = True

        def on_epoch_end(self, trainer, history):
            self.epochs.append(len(history.epochs))

        def on_fit_end(self, trainer, history):
            self.ended += 1

    rec = Recorder()
    tr = tiny_trainer(tmp_path, callbacks=[rec])
    tr.fit()
    assert rec.steps == [0, 1, 2, 3, 4, 5] and rec.epochs == [1, 2] and (rec.started, rec.ended) == (1, 1)
    assert tr.history.epochs[-1]["steps"] == 2


def test_adamw_foreach_gives_the_numbers_of_the_per_parameter_loop(tmp_path):
    # the trainer's AdamW runs one foreach call over all parameters (faster for small models); the
    # committed runs were trained with the per-parameter loop, so the two must agree bit for bit,
    # weight decay group and the method's own no-decay group (UW's log-variances) included
    weights = {}
    for foreach in (True, False):
        tr = tiny_trainer(tmp_path / str(foreach), "train.method=uw", "optim.epochs=2", "optim.lr=0.05")
        assert tr.optimizer.defaults["foreach"] is True
        for group in tr.optimizer.param_groups:
            group["foreach"] = foreach
        tr.fit()
        weights[foreach] = [p.detach().clone() for p in (*tr.model.parameters(), *tr.method.parameters())]
    assert all(torch.equal(a, b) for a, b in zip(weights[True], weights[False]))


def test_heldout_hook_and_method_parameters(tmp_path):
    # MOML asks for a validation batch each step (methods/base.py hook); UW has learnable log-variances
    tr = tiny_trainer(tmp_path, "train.method=moml", "optim.epochs=1")
    assert tr._val_loader is not None
    b0, b1 = tr._val_batch(0), tr._val_batch(0)
    assert torch.equal(b0["image"], b1["image"])  # a pure function of the step (exact resume)
    tr.fit()
    assert any(k.startswith("method/") for k in tr.history.steps[-1])
    assert not torch.equal(tr.method.logits, torch.zeros_like(tr.method.logits))  # the meta step moved it
    uw = tiny_trainer(tmp_path / "uw", "train.method=uw", "optim.epochs=1", "optim.lr=0.05")
    before = [p.detach().clone() for p in uw.method.parameters()]
    assert before and uw.optimizer.param_groups[-1]["weight_decay"] == 0.0
    uw.fit()
    assert any(not torch.equal(a, b) for a, b in zip(before, uw.method.parameters()))


def test_method_options_reach_the_method_and_bad_ones_are_config_errors(tmp_path):
    from coremtl_lite.config import ConfigError

    tr = tiny_trainer(tmp_path, "train.method=fairgrad", 'train.method_options={"alpha": 0.5}')
    assert tr.method.alpha == 0.5
    with pytest.raises(ConfigError, match="method_options"):
        tiny_trainer(tmp_path, "train.method=ew", 'train.method_options={"alpha": 0.5}')


def test_evaluate_builds_other_domains_on_demand(tmp_path):
    tr = tiny_trainer(tmp_path, "optim.epochs=1", "train.eval_every=0", "train.checkpoint_every=0")
    tr.fit()
    assert "score" not in tr.history.epochs[0] and not (tmp_path / "last.pt").exists()
    res = tr.evaluate(domains=["source", "colored"])
    assert set(res) == {"source", "colored"}
    assert set(res["colored"]["segmentation"]) == {"mIoU", "pix_acc"}
    with pytest.raises(ValueError, match="split"):
        tr.evaluate(split="train")


def test_objective_missing_a_task_is_a_clear_error(tmp_path):
    class Partial(TinyObjective):
        def __call__(self, model, batch, epoch, generator):
            out = super().__call__(model, batch, epoch, generator)
            out.task_losses.pop("normal")
            return out

    tr = tiny_trainer(tmp_path)
    tr.objective = Partial(tr.tasks)
    with pytest.raises(KeyError, match="normal"):
        tr.fit()


def test_dist_batchnorm_is_plain_batchnorm_in_one_process():
    torch.manual_seed(0)
    ref = torch.nn.BatchNorm2d(4)
    dbn = DistBatchNorm(4)
    x = torch.randn(6, 4, 3, 3)
    assert torch.allclose(ref(x), dbn(x), atol=1e-6)
    assert torch.allclose(ref.running_var, dbn.running_var)
    ref.eval(), dbn.eval()
    assert torch.allclose(ref(x), dbn(x), atol=1e-6)


def test_exact_resume_core_mtl_with_the_real_objective(tmp_path):
    """The ci profile's CORE-MTL (dual stream, hard grounding, CKA, CFA drawn from the trainer's generator
    from epoch 2 on) with RLW (random weights from the method's own generator): 2 epochs straight vs
    1 epoch + resume + 1 epoch give identical numbers."""
    from coremtl_lite.config import get_config
    from coremtl_lite.train import Trainer

    def make(out):
        return Trainer(
            get_config(
                "ci",
                [
                    "data.image_size=16",
                    "data.train_size=32",
                    "data.val_size=16",
                    "data.test_size=16",
                    "data.batch_size=8",
                    "data.eval_domains=source",
                    "model.architecture=dual_stream",
                    "model.grounding=hard",
                    "train.method=rlw",
                    "loss.cfa_prob=0.5",
                    "loss.cfa_max_rec_ratio=1e9",
                    "loss.perceptual=ssim",
                    f"train.out_dir={out}",
                ],
            )
        )

    straight = make(tmp_path / "a")
    straight.fit()
    make(tmp_path / "b").fit(stop_at_epoch=1)
    torch.manual_seed(999)
    resumed = make(tmp_path / "b")
    resumed.fit(resume=True)
    a, b = straight.history.steps, resumed.history.steps
    assert len(a) == len(b) == 8
    assert sum(r.get("obj/cfa_applied", 0.0) for r in a[4:]) >= 1  # CFA really ran after the resume
    for ra, rb in zip(a, b):
        assert ra == rb
    for (name, p), q in zip(straight.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(p, q), name
    assert torch.equal(straight.method.generator.get_state(), resumed.method.generator.get_state())


def test_render_cache_renders_each_chunk_once_independent_of_order():
    from coremtl_lite.data import ShadedScenes
    from coremtl_lite.data.cache import CachedDataset, maybe_cache

    ds = ShadedScenes(size=16, length=12, seed=3)
    first, second = maybe_cache(ds), maybe_cache(ds)
    assert isinstance(first, CachedDataset) and first.task_info == ds.task_info and len(first) == 12
    first.chunk = second.chunk = 5  # chunks {0..4}, {5..9}, {10, 11}
    calls = []
    inner = ds.get_batch
    ds.get_batch = lambda idx: calls.append(list(idx)) or inner(idx)
    a = [first.get_batch(o) for o in ([3, 0, 7, 3], [11, 1, 2, 0])]
    assert sorted(calls) == [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9], [10, 11]]  # each chunk rendered once
    calls.clear()
    b = [second.get_batch(o) for o in ([11], [7, 1], [3, 0, 7, 3], [11, 1, 2, 0])][2:]  # another access order
    ref = inner([3, 0, 7, 3])
    for x, y in zip(a, b):
        for key in ("image", "segmentation", "depth", "normal"):
            assert torch.equal(x[key], y[key]), key  # bit-identical whatever the order
        for group in x["factors"]:
            for key, value in x["factors"][group].items():
                assert torch.equal(y["factors"][group][key], value), (group, key)
    assert torch.allclose(a[0]["image"], ref["image"], atol=1e-6)  # the dataset's values up to rounding
    assert torch.equal(a[0]["segmentation"], ref["segmentation"])
    assert first.nbytes() > 0
    assert maybe_cache(ds, max_bytes=10) is ds  # over budget: not cached
    with pytest.raises(IndexError):
        first.get_batch([12])


# ------------------------------------------------------------------ CORE-MTL's staged schedule in the loop
def _core_config(tmp_path, *overrides):
    return get_config(
        "ci",
        [
            "data.image_size=16",
            "data.train_size=32",
            "data.val_size=16",
            "data.test_size=16",
            "data.batch_size=8",
            "loss.perceptual=ssim",
            "train.progress=false",
            "train.checkpoint_every=0",
            "train.eval_every=0",
            f"train.out_dir={tmp_path}",
            *overrides,
        ],
    )


@pytest.mark.parametrize("epochs", [4, 8])
def test_schedule_keeps_its_proportions_whatever_the_epoch_count(tmp_path, epochs):
    cfg = _core_config(
        tmp_path,
        f"optim.epochs={epochs}",
        "loss.decomposition_warmup=0.25",
        "loss.ind_ramp=0.25",
        "train.grad_log_every=0",
    )
    tr = Trainer(cfg)
    h = tr.fit()
    _, stage0 = h.step_series("obj/stage0")
    _, lam = h.step_series("obj/lambda_ind")
    n = len(stage0)
    assert n == 4 * epochs and sum(stage0) == n // 4  # the first quarter of the steps, for 4 and 8 epochs
    assert all(v == 0.0 for v in lam[: n // 4]) and lam[n // 2] == pytest.approx(cfg.loss.lambda_ind)
    assert 0 < lam[n // 4 + 1] < cfg.loss.lambda_ind  # the ramp in between


def test_stage0_in_the_trainer_leaves_the_heads_untouched_and_trains_the_encoder(tmp_path):
    tr = Trainer(
        _core_config(tmp_path, "optim.epochs=2", "loss.decomposition_warmup=0.5", "train.grad_log_every=1")
    )
    heads = {k: v.clone() for k, v in tr.model.heads.state_dict().items()}
    enc = {k: v.clone() for k, v in tr.model.encoder.state_dict().items()}
    tr.fit(stop_at_epoch=1)  # the first half of the run = stage 0
    assert all(r["obj/stage0"] == 1.0 for r in tr.history.steps)
    assert all("grad/task_norm" not in r and r["grad/rec_norm"] > 0 for r in tr.history.steps)
    now = tr.model.heads.state_dict()
    assert all(torch.equal(heads[k], now[k]) for k in heads)  # weights and BatchNorm statistics
    assert any(not torch.equal(enc[k], v) for k, v in tr.model.encoder.state_dict().items())
    tr.fit()  # stage 1: the heads train
    assert any(not torch.equal(heads[k], v) for k, v in tr.model.heads.state_dict().items())
    late = tr.history.steps[-1]
    assert late["obj/stage0"] == 0.0 and late["grad/task_norm"] > 0 and -1 <= late["grad/rec_cos"] <= 1
    assert late["grad/task_share"] + late["grad/rec_share"] + late["grad/ind_share"] == pytest.approx(1.0)


def test_model_selection_scores_against_the_trivial_predictors(tmp_path):
    tr = Trainer(
        _core_config(
            tmp_path,
            "optim.epochs=1",
            "train.eval_every=1",
            "model.architecture=vanilla",
            "model.grounding=none",
        )
    )
    tr.fit()

    ref = tr.evaluate_trivial(split="val")["val"]
    assert tr.history.epochs[-1]["score"] == pytest.approx(
        relative_score(tr.history.epochs[-1]["val"], ref, tr.directions())
    )
    assert (
        relative_score(ref, ref, tr.directions()) == 0.0
    )  # the trivial predictors score 0 against themselves


def test_extra_terms_are_capped_relative_to_the_task_gradient(tmp_path):
    cfg = _core_config(
        tmp_path,
        "optim.epochs=1",
        "loss.decomposition_warmup=0",
        "loss.max_term_grad_ratio=0.01",
        "train.grad_log_every=1",
        "train.checkpoint_every=1",
    )
    tr = Trainer(cfg)
    tr.fit()
    rec = tr.history.steps[-1]
    for term in ("rec", "ind"):
        expected = min(1.0, 0.01 * rec["grad/task_norm"] / rec[f"grad/{term}_norm"])
        assert rec[f"grad/{term}_scale"] == pytest.approx(expected) and expected < 1.0
    assert tr.term_scales == {"rec": rec["grad/rec_scale"], "ind": rec["grad/ind_scale"]}
    # the optimised (and logged) extra loss is the scaled sum of the terms; the scales travel with the checkpoint
    assert rec["loss/extra"] < rec["obj/rec"]
    again = Trainer(cfg)
    again.resume(tmp_path / "last.pt")
    assert again.term_scales == tr.term_scales
    off = Trainer(
        _core_config(
            tmp_path / "off", "optim.epochs=1", "loss.max_term_grad_ratio=0", "train.grad_log_every=1"
        )
    )
    off.fit()
    assert off.term_scales == {}
