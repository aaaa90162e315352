"""Tests of coremtl_lite.metrics against hand-computed values (LibMTL semantics, paper §4.1)."""

import math

import numpy as np
import pytest
import torch

from coremtl_lite.metrics import (
    AttributesMeter,
    ClassificationMeter,
    DepthMeter,
    NormalMeter,
    SegmentationMeter,
    delta_m,
    make_meter,
)
from coremtl_lite.tasks import tasks_from_info


def _onehot_logits(labels, k):
    return torch.nn.functional.one_hot(labels, k).permute(0, 3, 1, 2).float()


def test_segmentation_hand_computed_with_void_and_absent_class():
    # 4 classes; class 3 never appears in gt nor prediction (union 0: left out of the mean)
    gt = torch.tensor([[[0, 0, 1], [1, 2, -1]]])
    pred = torch.tensor([[[0, 1, 1], [1, 0, 2]]])  # last pixel is void: ignored whatever it says
    m = SegmentationMeter(4)
    m.update(_onehot_logits(pred, 4), gt)
    # class 0: TP 1, FP 1 (pixel gt 2 -> 0), FN 1 (gt 0 -> 1)  -> 1/3
    # class 1: TP 2, FP 1, FN 0 -> 2/3 ; class 2: TP 0, FP 0, FN 1 -> 0
    res = m.compute()
    assert res["mIoU"] == pytest.approx((1 / 3 + 2 / 3 + 0) / 3)
    assert res["pix_acc"] == pytest.approx(3 / 5)
    # labels instead of logits give the same confusion matrix
    m2 = SegmentationMeter(4)
    m2.update(pred, gt)
    assert torch.equal(m.state(), m2.state())


def test_segmentation_matches_libmtl_when_all_classes_present():
    g = torch.Generator().manual_seed(0)
    gt = torch.randint(0, 3, (4, 8, 8), generator=g)
    gt[0, 0, :3] = -1
    logits = torch.randn(4, 3, 8, 8, generator=g)
    m = SegmentationMeter(3)
    m.update(logits, gt)
    # LibMTL's SegMetric, written out
    p, t = logits.softmax(1).argmax(1).flatten(), gt.flatten()
    k = (t >= 0) & (t < 3)
    h = torch.bincount(3 * t[k] + p[k], minlength=9).reshape(3, 3).float()
    iu = torch.diag(h) / (h.sum(1) + h.sum(0) - torch.diag(h))
    assert m.compute()["mIoU"] == pytest.approx(float(iu.mean()))
    assert m.compute()["pix_acc"] == pytest.approx(float(torch.diag(h).sum() / h.sum()))


def test_segmentation_ties_and_memory_layout():
    # equal logits: the first class wins (torch.argmax), whatever the memory layout of the logits
    logits = torch.zeros(2, 4, 3, 3)
    logits[:, 2] = 1.0
    logits[:, 3] = 1.0  # tie between classes 2 and 3 -> 2
    logits[0, :, 0, 0] = 0.0  # all equal -> class 0
    gt = torch.full((2, 3, 3), 2)
    gt[0, 0, 0] = 0
    for layout in (torch.contiguous_format, torch.channels_last):
        m = SegmentationMeter(4)
        m.update(logits.contiguous(memory_format=layout), gt)
        assert m.compute()["pix_acc"] == 1.0
        assert m.compute()["mIoU"] == 1.0


def test_depth_over_valid_pixels():
    gt = torch.tensor([[[[2.0, 0.0], [4.0, 1.0]]]])
    pred = torch.tensor([[[[3.0, 9.0], [4.0, 0.5]]]])
    m = DepthMeter()
    m.update(pred, gt)
    res = m.compute()
    assert res["abs_err"] == pytest.approx((1 + 0 + 0.5) / 3)
    assert res["rel_err"] == pytest.approx((1 / 2 + 0 + 0.5 / 1) / 3)


def test_normals_angles_median_and_thresholds():
    # four valid pixels with angles 0, 10, 45, 90 degrees; one invalid pixel
    angles = [0.0, 10.0, 45.0, 90.0]
    pred = torch.zeros(1, 3, 1, 5)
    gt = torch.zeros(1, 3, 1, 5)
    for i, a in enumerate(angles):
        r = math.radians(a)
        gt[0, :, 0, i] = torch.tensor([0.0, 0.0, 1.0])
        pred[0, :, 0, i] = torch.tensor([math.sin(r), 0.0, math.cos(r)]) * 2.5  # not unit: re-normalised
    pred[0, :, 0, 4] = torch.tensor([1.0, 0.0, 0.0])  # gt 0 there: ignored
    m = NormalMeter()
    m.update(pred, gt)
    res = m.compute()
    assert res["mean"] == pytest.approx(np.mean(angles), abs=1e-4)
    assert res["median"] == pytest.approx(np.median(angles), abs=0.011)  # histogram resolution 0.01 deg
    assert res["within_11.25"] == pytest.approx(0.5)
    assert res["within_22.5"] == pytest.approx(0.5)
    assert res["within_30"] == pytest.approx(0.5)


def test_normal_median_close_to_exact_on_random_data():
    g = torch.Generator().manual_seed(1)
    pred = torch.randn(2, 3, 16, 16, generator=g)
    gt = torch.nn.functional.normalize(torch.randn(2, 3, 16, 16, generator=g), dim=1)
    m = NormalMeter()
    m.update(pred, gt)
    ang = torch.rad2deg(torch.acos((torch.nn.functional.normalize(pred, dim=1) * gt).sum(1).clamp(-1, 1)))
    assert m.compute()["median"] == pytest.approx(float(np.median(ang.numpy())), abs=0.02)


def test_normals_zero_prediction_and_layout_match_f_normalize():
    # a zero prediction is left as zero (F.normalize's eps): 90 degrees to any unit normal
    g = torch.Generator().manual_seed(3)
    pred = torch.randn(3, 3, 8, 8, generator=g)
    pred[0, :, 0, 0] = 0.0
    gt = torch.nn.functional.normalize(torch.randn(3, 3, 8, 8, generator=g), dim=1)
    ref = torch.rad2deg(
        torch.acos((torch.nn.functional.normalize(pred.double(), dim=1) * gt.double()).sum(1).clamp(-1, 1))
    )
    for layout in (torch.contiguous_format, torch.channels_last):
        m = NormalMeter()
        m.update(pred.contiguous(memory_format=layout), gt)
        assert m.compute()["mean"] == pytest.approx(float(ref.mean()), rel=1e-12)
    m = NormalMeter()
    m.update(pred[:1, :, :1, :1], gt[:1, :, :1, :1])
    assert m.compute()["mean"] == pytest.approx(90.0)


def test_state_is_summable():
    g = torch.Generator().manual_seed(2)
    preds = torch.randn(4, 3, 8, 8, generator=g)
    gts = torch.nn.functional.normalize(torch.randn(4, 3, 8, 8, generator=g), dim=1)
    whole, a, b = NormalMeter(), NormalMeter(), NormalMeter()
    whole.update(preds, gts)
    a.update(preds[:1], gts[:1])
    b.update(preds[1:], gts[1:])
    merged = NormalMeter()
    merged.load_state(a.state() + b.state())  # what an all-reduce does
    assert merged.compute() == pytest.approx(whole.compute())
    with pytest.raises(ValueError, match="expected shape"):
        merged.load_state(torch.zeros(3))


def test_attributes_and_classification():
    m = AttributesMeter(2)
    m.update(
        torch.tensor([[1.0, -1.0], [-2.0, -1.0], [3.0, 2.0]]),
        torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0]]),
    )
    assert torch.allclose(m.per_attribute(), torch.tensor([2 / 3, 2 / 3], dtype=torch.float64))
    assert m.compute()["acc"] == pytest.approx(2 / 3)
    c = ClassificationMeter(3)
    c.update(torch.tensor([[0.1, 0.9, 0.0], [2.0, 0.0, 0.0]]), torch.tensor([1, 2]))
    assert c.compute()["acc"] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="unknown task kind"):
        make_meter("pose")


def test_delta_m_sign_conventions():
    tasks = tasks_from_info(
        {"segmentation": {"kind": "segmentation", "num_classes": 3}, "depth": {"kind": "depth"}},
        ["segmentation", "depth"],
    )
    stl = {"segmentation": {"mIoU": 0.5, "pix_acc": 0.8}, "depth": {"abs_err": 0.4, "rel_err": 0.2}}
    # higher mIoU is better (+10%), lower depth error is better (-10% error = +10%)
    mtl = {"segmentation": {"mIoU": 0.55, "pix_acc": 0.8}, "depth": {"abs_err": 0.36, "rel_err": 0.2}}
    # seg: (10 + 0)/2 = 5 ; depth: (10 + 0)/2 = 5 ; mean 5
    assert delta_m(mtl, stl, tasks) == pytest.approx(5.0)
    worse = {"segmentation": {"mIoU": 0.45, "pix_acc": 0.8}, "depth": {"abs_err": 0.44, "rel_err": 0.2}}
    assert delta_m(worse, stl, tasks) == pytest.approx(-5.0)
    assert delta_m(stl, stl, {"depth": {"abs_err": False}}) == 0.0
    with pytest.raises(KeyError, match="missing"):
        delta_m({"depth": {"abs_err": 1.0}}, stl, tasks)
