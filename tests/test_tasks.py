"""Tests of coremtl_lite.tasks: Task construction from a dataset's task_info."""

import dataclasses

import pytest
import torch

from coremtl_lite.metrics import DepthMeter, SegmentationMeter
from coremtl_lite.tasks import Task, tasks_from_info

INFO = {
    "segmentation": {"kind": "segmentation", "num_classes": 7},
    "depth": {"kind": "depth"},
    "normal": {"kind": "normal"},
    "attributes": {"kind": "attributes", "num_attributes": 10},
    "left": {"kind": "classification", "num_classes": 10},
}


def test_kinds_channels_and_directions():
    tasks = tasks_from_info(INFO, ["segmentation", "depth", "normal", "attributes", "left"])
    by = {t.name: t for t in tasks}
    assert [t.name for t in tasks] == ["segmentation", "depth", "normal", "attributes", "left"]
    assert {n: t.channels for n, t in by.items()} == {
        "segmentation": 7,
        "depth": 1,
        "normal": 3,
        "attributes": 10,
        "left": 10,
    }
    assert by["segmentation"].directions == {"mIoU": True, "pix_acc": True}
    assert by["depth"].directions == {"abs_err": False, "rel_err": False}
    assert by["normal"].directions["mean"] is False and by["normal"].directions["within_30"] is True
    assert by["left"].kind == "classification" and by["left"].directions == {"acc": True}
    assert by["segmentation"].dense and not by["attributes"].dense
    m = by["segmentation"].make_meter()
    assert isinstance(m, SegmentationMeter) and m.num_classes == 7
    assert isinstance(by["depth"].make_meter(), DepthMeter)
    assert by["segmentation"].make_meter() is not m  # a fresh meter each time


def test_task_is_frozen_and_loss_works():
    (t,) = tasks_from_info(INFO, ["depth"])
    assert isinstance(t, Task)
    with pytest.raises(dataclasses.FrozenInstanceError):
        t.name = "x"
    pred, target = torch.ones(2, 1, 3, 3), torch.zeros(2, 1, 3, 3)
    target[0, 0, 0, 0] = 3.0
    assert t.loss(pred, target).item() == pytest.approx(2.0)


def test_default_names_and_errors():
    assert [t.name for t in tasks_from_info(INFO)] == list(INFO)
    with pytest.raises(KeyError, match="not in the dataset's task_info"):
        tasks_from_info(INFO, ["segmentation", "albedo"])
    with pytest.raises(KeyError, match="num_classes"):
        tasks_from_info({"seg": {"kind": "segmentation"}}, ["seg"])
    with pytest.raises(ValueError, match="unknown kind"):
        tasks_from_info({"x": {"kind": "pose"}}, ["x"])
    with pytest.raises(KeyError, match="no 'kind'"):
        tasks_from_info({"x": {}}, ["x"])
    with pytest.raises(ValueError, match="duplicate"):
        tasks_from_info(INFO, ["depth", "depth"])
