"""Profiles, overrides and validation of coremtl_lite.config; the device and seeding helpers."""

import json

import numpy as np
import pytest
import torch

from coremtl_lite import config as C
from coremtl_lite.runtime import get_device, seed_everything


@pytest.mark.parametrize("profile", C.PROFILES)
def test_every_profile_builds_and_validates(profile):
    cfg = C.get_config(profile)
    assert cfg.profile == profile
    assert cfg.validate() is cfg


def test_ci_profile_is_smaller_than_cpu_profile():
    ci, cpu = C.get_config("ci"), C.get_config("cpu")
    assert ci.data.train_size < cpu.data.train_size
    assert ci.optim.epochs <= cpu.optim.epochs
    assert ci.data.image_size <= cpu.data.image_size


def test_paper_profile_carries_table7_nyuv2_weights_and_appendix_f_optimiser():
    cfg = C.get_config("paper")
    assert cfg.loss.task_weights == {"segmentation": 20.0, "depth": 10.0, "normal": 10.0}
    assert (cfg.optim.lr, cfg.optim.weight_decay, cfg.optim.grad_clip) == (2e-4, 1e-4, 10.0)
    assert (cfg.data.batch_size, cfg.optim.epochs) == (16, 100)


def test_profile_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv(C.PROFILE_ENV, "ci")
    assert C.active_profile() == "ci"
    assert C.get_config().profile == "ci"
    monkeypatch.setenv(C.PROFILE_ENV, "laptop")
    with pytest.raises(C.ConfigError, match="not a profile"):
        C.active_profile()
    monkeypatch.delenv(C.PROFILE_ENV)
    assert C.active_profile() == ("gpu" if torch.cuda.is_available() else "cpu")


def test_overrides_are_typed():
    cfg = C.get_config(
        "ci",
        [
            "optim.lr=0.5",
            "data.tasks=segmentation,depth",
            "model.architecture=vanilla",
            "optim.epochs=3",
            'loss.task_weights={"depth": 2}',
            "data.root=none",
        ],
    )
    assert cfg.optim.lr == 0.5 and isinstance(cfg.optim.lr, float)
    assert cfg.data.tasks == ("segmentation", "depth")
    assert cfg.model.architecture == "vanilla"
    assert cfg.optim.epochs == 3 and isinstance(cfg.optim.epochs, int)
    assert cfg.loss.task_weights == {"depth": 2.0}
    assert cfg.data.root is None


def test_overrides_do_not_mutate_the_profile():
    base = C.get_config("ci")
    C.apply_overrides(base, ["optim.lr=0.123"])
    assert base.optim.lr != 0.123


def test_unknown_key_suggests_the_nearest():
    with pytest.raises(C.ConfigError, match="did you mean 'optim.lr'"):
        C.get_config("ci", ["optim.lrr=1"])
    with pytest.raises(C.ConfigError, match="section.key=value"):
        C.get_config("ci", ["optim.lr"])


@pytest.mark.parametrize(
    "override,match",
    [
        ("optim.epochs=1.5", "integer"),
        ("optim.lr=fast", "number"),
        ("model.leaky_heads=maybe", "true/false"),
        ("model.dual_stream=false", "replaced by model.architecture=dual_stream|vanilla"),
        ("model.architecture=auto", "not one of dual_stream, vanilla, mtan, mmoe, mtcrl"),
        ("model.encoder=vgg", "not one of"),
        ("loss.cfa_prob=2", r"\[0, 1\]"),
        ("data.batch_size=0", "> 0"),
        ('loss.task_weights={"colour": 1}', "not in data.tasks"),
    ],
)
def test_bad_values_name_the_problem(override, match):
    with pytest.raises(C.ConfigError, match=match):
        C.get_config("ci", [override])


def test_round_trip_through_json(tmp_path):
    cfg = C.get_config("ci", ["optim.lr=0.01", 'loss.task_weights={"depth": 3}'])
    path = tmp_path / "cfg.json"
    cfg.to_json(path)
    again = C.Config.from_dict(json.loads(path.read_text()))
    assert again == cfg


def test_seed_everything_makes_runs_repeatable():
    seed_everything(7)
    a = (np.random.rand(3), torch.rand(3))
    seed_everything(7)
    b = (np.random.rand(3), torch.rand(3))
    assert np.array_equal(a[0], b[0]) and torch.equal(a[1], b[1])
    with pytest.raises(ValueError):
        seed_everything(-1)


def test_device_helper():
    assert get_device("cpu").type == "cpu"
    assert get_device("auto").type in ("cpu", "cuda", "mps")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="CUDA is not available"):
            get_device("cuda")


@pytest.mark.parametrize("benchmark", sorted(C.PAPER_PRESETS))
def test_paper_presets_build(benchmark):
    cfg = C.paper_config(benchmark)
    assert cfg.profile == "paper"
    assert cfg.optim.lr == 2e-4 and cfg.optim.grad_clip == 10.0


def test_paper_preset_values_follow_table7():
    gta = C.paper_config("gta5_to_cityscapes")
    assert gta.loss.task_weights == {"segmentation": 30.0, "depth": 25.0}
    assert (gta.loss.lambda_ind, gta.loss.lambda_cfa, gta.optim.warmup_epochs) == (0.1, 0.5, 10)
    celeba = C.paper_config("celeba")
    assert (celeba.data.batch_size, celeba.optim.epochs, celeba.loss.lambda_cfa) == (256, 50, 0.0)
    with pytest.raises(C.ConfigError, match="unknown paper benchmark"):
        C.paper_config("imagenet")


def test_method_options_keep_strings_and_lists_and_round_trip(tmp_path):
    cfg = C.get_config(
        "ci",
        ["train.method=mgda", "train.method_options.solver=frank_wolfe", "train.method_options.eps=0.01"],
    )
    assert cfg.train.method_options == {"solver": "frank_wolfe", "eps": 0.01}
    cfg.to_json(tmp_path / "c.json")
    assert C.Config.from_dict(json.loads((tmp_path / "c.json").read_text())) == cfg
    pref = C.get_config("ci", ['train.method_options={"preference": [0.5, 0.5], "normalize": "log_nadir"}'])
    assert pref.train.method_options == {"preference": [0.5, 0.5], "normalize": "log_nadir"}


def test_a_bare_key_suggests_the_full_key():
    with pytest.raises(C.ConfigError, match="did you mean 'optim.lr'"):
        C.get_config("ci", ["lr=1"])
    with pytest.raises(C.ConfigError, match="did you mean 'train.seed'"):
        C.get_config("ci", ["seed=1"])


def test_a_saved_config_with_the_retired_dual_stream_key_names_its_replacement():
    raw = C.get_config("ci").to_dict()
    raw["model"]["dual_stream"] = True
    with pytest.raises(C.ConfigError, match="model.dual_stream was replaced by model.architecture"):
        C.Config.from_dict(raw)
