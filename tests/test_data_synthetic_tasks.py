"""DigitPairs and MultiSEM: label-pair shift, spurious correlations, determinism, splits."""

import torch
from sklearn.linear_model import LogisticRegression

from coremtl_lite.config import get_config
from coremtl_lite.data import DigitPairs, MultiSEM, build_splits, make_loader
from coremtl_lite.data.digits import label_pair_split


def _pairs(ds, n=400):
    b = ds.get_batch(range(n))
    return set(zip(b["left"].tolist(), b["right"].tolist())), b


def test_digit_pairs_test_pairs_disjoint_from_train():
    split = label_pair_split(0)
    assert len(set(split["train"]) | set(split["val"]) | set(split["test"])) == 100
    tr, btr = _pairs(DigitPairs("train", size=16, length=600, seed=0), 600)
    te, bte = _pairs(DigitPairs("test", size=16, length=400, seed=0))
    va, _ = _pairs(DigitPairs("val", size=16, length=400, seed=0))
    tid, _ = _pairs(DigitPairs("test_id", size=16, length=400, seed=0))
    assert tr.isdisjoint(te) and tr.isdisjoint(va) and va.isdisjoint(te)
    assert tid <= set(split["train"]) and len(tr) == 60
    # no digit image is shared between the train and test pools
    ids_tr = set(btr["factors"]["semantic"]["left_image"].tolist()) | set(
        btr["factors"]["semantic"]["right_image"].tolist()
    )
    ids_te = set(bte["factors"]["semantic"]["left_image"].tolist()) | set(
        bte["factors"]["semantic"]["right_image"].tolist()
    )
    assert ids_tr.isdisjoint(ids_te)


def test_digit_pairs_sample_contract_and_determinism():
    ds = DigitPairs("train", size=16, length=50, seed=1)
    x = ds[3]
    assert x["image"].shape == (3, 16, 32) and x["left"].dtype == torch.int64 and x["left"].dim() == 0
    assert 0 <= float(x["image"].min()) and float(x["image"].max()) <= 1
    assert torch.equal(
        ds.get_batch([3, 4])["image"][0], DigitPairs("train", size=16, length=50, seed=1)[3]["image"]
    )
    assert ds.causal_mask["left"][:, :16].all() and not ds.causal_mask["left"][:, 16:].any()
    b = next(iter(make_loader(ds, 8, shuffle=True, seed=0)))
    assert b["image"].shape == (8, 3, 16, 32) and b["right"].shape == (8,)


def test_digit_pairs_colour_shortcut_only_in_training():
    def probe_acc(split):
        ds = DigitPairs(split, size=8, length=600, seed=0)
        b = ds.get_batch(range(600))
        bg = b["image"][:, :, 0, 0].numpy()  # background colour at a corner pixel
        y = b["right"].numpy()
        clf = LogisticRegression(max_iter=3000, C=100.0).fit(bg[:300], y[:300])
        return clf.score(bg[300:], y[300:])

    assert probe_acc("train") > 0.6 and probe_acc("test") < 0.3


def test_multisem_agreement_and_factors():
    tr = MultiSEM("train", length=4000, seed=0)
    te = MultiSEM("test", length=4000, seed=0)
    btr, bte = tr.get_batch(range(4000)), te.get_batch(range(4000))
    agree_tr = float((btr["task_a"] == btr["task_b"]).float().mean())
    agree_te = float((bte["task_a"] == bte["task_b"]).float().mean())
    assert abs(agree_tr - 0.9) < 0.03 and abs(agree_te - 0.1) < 0.03
    assert btr["image"].shape == (4000, 10)
    # F_a is centred on +-mu_a: its projection on mu_a has the sign of the label (mostly)
    proj = btr["image"][:, :5] @ tr.mu[0]
    assert float(((proj > 0).long() == btr["task_a"]).float().mean()) > 0.85
    assert (
        tr.causal_mask["task_a"].sum() == 5
        and not (tr.causal_mask["task_a"] & tr.causal_mask["task_b"]).any()
    )
    assert torch.equal(tr[7]["image"], btr["image"][7])


def test_build_splits_synthetic_tasks():
    cfg = get_config("ci", ["data.dataset=digit_pairs", "data.tasks=left,right"])
    sp = build_splits(cfg.data, seed=0)
    assert (
        sp.train.split == "train"
        and sp.test["target"].split == "test"
        and sp.test["source"].split == "test_id"
    )
    cfg = get_config("ci", ["data.dataset=multisem", "data.tasks=task_a,task_b"])
    sp = build_splits(cfg.data, seed=0)
    assert sp.test["target"].m_c == 0.1 and sp.train.m_c == 0.9
