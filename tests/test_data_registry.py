"""The dataset registry: every name builds its splits; unknown names are refused with the nearest one."""

import dataclasses

import pytest

from coremtl_lite.config import get_config
from coremtl_lite.data import available_datasets, build_splits, dataset_entry, register_dataset


def test_every_synthetic_dataset_builds_disjoint_splits():
    cfg = get_config("ci")
    for name in available_datasets(synthetic=True):
        tasks = {"shaded_attributes": ("attributes",), "digit_pairs": ("left", "right")}.get(
            name, cfg.data.tasks
        )
        data = dataclasses.replace(
            cfg.data,
            dataset=name,
            tasks=tasks,
            train_size=4,
            val_size=2,
            test_size=2,
            eval_domains=("source", "target"),
        )
        if name == "multisem":
            data = dataclasses.replace(data, tasks=("t0",))
        splits = build_splits(data, seed=0)
        assert (len(splits.train), len(splits.val)) == (4, 2), name
        assert sorted(splits.test) == ["source", "target"], name


def test_real_datasets_need_a_root_and_are_not_synthetic():
    cfg = get_config("ci")
    real = available_datasets(synthetic=False)
    assert {"nyuv2", "cityscapes", "gta5", "colored_cityscapes", "celeba"} <= set(real)
    assert not set(real) & set(available_datasets(synthetic=True))
    with pytest.raises(ValueError, match="data.root must name the prepared nyuv2 folder"):
        build_splits(dataclasses.replace(cfg.data, dataset="nyuv2", root=None), seed=0)


def test_unknown_dataset_names_the_nearest():
    with pytest.raises(ValueError, match=r"unknown data.dataset 'nyu_v2' \(did you mean 'nyuv2'\?\)"):
        dataset_entry("nyu_v2")


def test_a_name_is_registered_once():
    with pytest.raises(ValueError, match="registered twice"):
        register_dataset("shaded_scenes", synthetic=True)(lambda data_cfg, seed: None)
