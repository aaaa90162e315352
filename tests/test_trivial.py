"""The trivial predictors (majority class, mean depth, mean normal, ...) on hand-made batches with known
answers, their use by the trainer (head initialisation, model selection) and the below-trivial flag."""

from __future__ import annotations

import math

import pytest
import torch

from coremtl_lite.metrics import below_trivial, delta_m, task_deltas
from coremtl_lite.models.heads import DenseHead, GlobalHead, init_heads_from_data
from coremtl_lite.models.trivial import TrivialPredictor, fit_trivial, task_statistics
from coremtl_lite.tasks import tasks_from_info
from coremtl_lite.train import evaluate_datasets

INFO = {
    "segmentation": {"kind": "segmentation", "num_classes": 3},
    "depth": {"kind": "depth"},
    "normal": {"kind": "normal"},
    "attributes": {"kind": "attributes", "num_attributes": 2},
    "digit": {"kind": "classification", "num_classes": 4},
}


def _batch():
    """Two 2x2 images. Segmentation: class 1 on 4 pixels, class 0 on 2, class 2 on 1, one void.
    Depth: valid values 1, 2, 3, 6 (mean 3), zeros invalid. Normals: (0,0,1) x3 and (1,0,0) x1, one
    invalid -- mean direction (1, 0, 3)/sqrt(10). Attributes: a0 on in 2 of 2, a1 in 0 of 2. Digit: 3, 3."""
    seg = torch.tensor([[[1, 1], [0, -1]], [[1, 1], [2, 0]]])
    depth = torch.tensor([[[[1.0, 0.0], [2.0, 0.0]]], [[[3.0, 6.0], [0.0, 0.0]]]])
    normal = torch.zeros(2, 3, 2, 2)
    normal[0, 2, 0, 0] = normal[0, 2, 0, 1] = normal[1, 2, 1, 1] = 1.0
    normal[1, 0, 0, 0] = 1.0
    return {
        "image": torch.rand(2, 3, 2, 2),
        "segmentation": seg,
        "depth": depth,
        "normal": normal,
        "attributes": torch.tensor([[1.0, 0.0], [1.0, 0.0]]),
        "digit": torch.tensor([3, 3]),
    }


def _tasks():
    return tasks_from_info(INFO, list(INFO))


def test_statistics_match_the_hand_computed_answers():
    stats = task_statistics([_batch()], _tasks())
    assert torch.allclose(stats["segmentation"], torch.tensor([2 / 7, 4 / 7, 1 / 7]))
    assert stats["depth"].item() == pytest.approx(3.0)
    assert torch.allclose(stats["normal"], torch.tensor([1.0, 0.0, 3.0]) / math.sqrt(10), atol=1e-6)
    assert torch.equal(stats["attributes"], torch.tensor([1.0, 0.0]))
    assert torch.allclose(stats["digit"], torch.tensor([0.0, 0.0, 0.0, 1.0]))
    # split into two batches and capped by max_samples: the same numbers / only the first image
    halves = [{k: v[:1] for k, v in _batch().items()}, {k: v[1:] for k, v in _batch().items()}]
    assert torch.allclose(task_statistics(halves, _tasks())["segmentation"], stats["segmentation"])
    first = task_statistics([_batch()], _tasks(), max_samples=1)
    assert first["depth"].item() == pytest.approx(1.5)


def test_trivial_predictor_outputs_the_constants_and_scores_like_one():
    tasks = _tasks()
    trivial = fit_trivial([_batch()], tasks)
    preds = trivial(torch.zeros(5, 3, 4, 6))["preds"]
    assert preds["segmentation"].shape == (5, 3, 4, 6) and bool((preds["segmentation"].argmax(1) == 1).all())
    assert bool((preds["depth"] == 3.0).all()) and preds["normal"].shape == (5, 3, 4, 6)
    assert preds["attributes"].shape == (5, 2) and bool((preds["attributes"][:, 0] > 0).all())
    assert bool((preds["attributes"][:, 1] < 0).all()) and bool((preds["digit"].argmax(1) == 3).all())

    class _Data:  # the hand-made batch as a dataset the evaluation pass can read
        task_info = INFO

        def __len__(self):
            return 2

        def get_batch(self, ids):
            return {k: v[torch.as_tensor(ids)] for k, v in _batch().items()}

    res = evaluate_datasets(trivial, tasks, {"d": _Data()}, batch_size=2, device=torch.device("cpu"))["d"]
    # predicting class 1 everywhere: pixel accuracy 4/7; IoU class 1 = 4/7, classes 0 and 2 = 0 -> mIoU 4/21
    assert res["segmentation"]["pix_acc"] == pytest.approx(4 / 7)
    assert res["segmentation"]["mIoU"] == pytest.approx(4 / 21)
    assert res["depth"]["abs_err"] == pytest.approx((2 + 1 + 0 + 3) / 4)  # |1-3|, |2-3|, |3-3|, |6-3|
    assert res["attributes"]["acc"] == pytest.approx(1.0) and res["digit"]["acc"] == pytest.approx(1.0)


def test_statistics_refuse_a_task_without_valid_labels():
    b = _batch()
    b["depth"] = torch.zeros_like(b["depth"])
    with pytest.raises(ValueError, match="no valid label of task 'depth'"):
        task_statistics([b], _tasks())


def test_heads_start_at_the_data():
    tasks = tasks_from_info(INFO, ["segmentation", "depth", "digit"])
    stats = task_statistics([_batch()], tasks)
    torch.manual_seed(0)
    heads = torch.nn.ModuleDict(
        {
            "segmentation": DenseHead(8, 8, 3, 8, "segmentation"),
            "depth": DenseHead(8, 8, 1, 8, "depth"),
            "digit": GlobalHead(8, 4),
        }
    )
    init_heads_from_data(heads, {t.name: t.kind for t in tasks}, stats)
    heads.eval()
    x, low = torch.randn(4, 8, 4, 4), torch.randn(4, 8, 8, 8)
    depth = heads["depth"](x, low, (16, 16))
    assert abs(float(depth.detach().mean()) - 3.0) < 0.3  # starts near the mean training depth, not at 0
    assert torch.allclose(heads["segmentation"].classifier.bias, stats["segmentation"].clamp_min(1e-4).log())
    assert int(heads["digit"].mlp[-1].bias.argmax()) == 3


def test_task_deltas_and_below_trivial_flags():
    dirs = {"seg": {"mIoU": True}, "depth": {"abs_err": False}}
    trivial = {"seg": {"mIoU": 0.2}, "depth": {"abs_err": 0.1}}
    model = {"seg": {"mIoU": 0.5}, "depth": {"abs_err": 0.12}}
    d = task_deltas(model, trivial, dirs)
    assert d["seg"] == pytest.approx(150.0) and d["depth"] == pytest.approx(-20.0)
    assert delta_m(model, trivial, dirs) == pytest.approx(65.0)
    flags = below_trivial({"source": model, "target": trivial}, {"source": trivial, "target": trivial}, dirs)
    assert [(dom, task) for dom, task, _ in flags] == [
        ("source", "depth"),
        ("target", "seg"),
        ("target", "depth"),
    ]
    with pytest.raises(ValueError, match="cannot normalise"):
        task_deltas(model, {"seg": {"mIoU": 0.0}, "depth": {"abs_err": 0.1}}, dirs)
    assert set(task_deltas(model, {"seg": {"mIoU": 0.0}, "depth": {"abs_err": 0.1}}, dirs, lenient=True)) == {
        "depth"
    }


def test_trivial_predictor_module_has_no_parameters_to_train():
    trivial = TrivialPredictor(_tasks(), task_statistics([_batch()], _tasks()))
    assert list(trivial.parameters()) == []
