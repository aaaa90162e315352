"""Every model, dataset, method and meter of the package satisfies the protocol it is checked against."""

import dataclasses

import pytest
import torch

from coremtl_lite import protocols as P
from coremtl_lite.config import get_config
from coremtl_lite.data import build_splits
from coremtl_lite.methods import available, build_method
from coremtl_lite.models import build_model
from coremtl_lite.tasks import tasks_from_info


@pytest.fixture(scope="module")
def scenes():
    cfg = get_config("ci")
    data = dataclasses.replace(cfg.data, train_size=4, val_size=2, test_size=2)
    return cfg, build_splits(data, seed=0)


@pytest.mark.parametrize(
    "arch,grounding,wanted",
    [
        ("dual_stream", "hard", P.GroundedModel),
        ("dual_stream", "soft", P.GroundedModel),
        ("dual_stream", "none", P.EncodePredictModel),
        ("vanilla", "none", P.EncodePredictModel),
        ("mtan", "none", P.MultiTaskModel),
        ("mmoe", "none", P.MultiTaskModel),
    ],
)
def test_models_satisfy_their_protocol(scenes, arch, grounding, wanted):
    cfg, splits = scenes
    model_cfg = dataclasses.replace(cfg.model, architecture=arch, grounding=grounding)
    model = build_model(model_cfg, tasks_from_info(splits.train.task_info, cfg.data.tasks))
    assert isinstance(model, wanted)
    assert isinstance(model, P.GroundedModel) == (wanted is P.GroundedModel)
    assert not isinstance(model, P.ModularModel)
    out = model(splits.train.get_batch([0, 1])["image"])
    assert set(out["preds"]) == set(cfg.data.tasks) and model.dual_stream == ("z_p" in out)


def test_the_mtcrl_model_is_modular():
    cfg = get_config("ci")
    info = {"left": {"kind": "classification", "num_classes": 10}}
    model_cfg = dataclasses.replace(cfg.model, architecture="mtcrl")
    model = build_model(model_cfg, tasks_from_info(info), input_shape=(3, 32, 32))
    assert isinstance(model, P.ModularModel) and not isinstance(model, P.EncodePredictModel)


def test_synthetic_datasets_are_batch_datasets(scenes):
    _, splits = scenes
    assert isinstance(splits.train, P.MultiTaskDataset) and isinstance(splits.train, P.BatchDataset)
    assert isinstance(splits.train, P.RenderableScenes)
    assert not isinstance(splits.train, P.ToggleableDataset | P.CausalMaskDataset)


def test_methods_and_meters_satisfy_their_protocols(scenes):
    cfg, splits = scenes
    for name in available():
        if name == "stl":
            continue  # one task per run
        assert isinstance(build_method(name, ["a", "b"]), P.MultiTaskMethod), name
    for task in tasks_from_info(splits.train.task_info, cfg.data.tasks):
        meter = task.make_meter()
        assert isinstance(meter, P.DistributedMeter), task.name
        meter.load_state(torch.zeros_like(meter.state()))


def test_a_runtime_check_fails_for_what_lacks_the_members():
    class NoBatch:
        task_info: dict = {}

        def __len__(self):
            return 0

    assert not isinstance(NoBatch(), P.BatchDataset)
    assert not isinstance(torch.nn.Linear(2, 2), P.MultiTaskModel)
