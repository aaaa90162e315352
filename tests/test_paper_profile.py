"""The paper profile's presets build and run one training step on fixtures in the real on-disk formats."""

import pytest

from coremtl_lite.config import paper_config
from tests.test_data_real import CITY, NYU, _celeba_raw, _mtan


@pytest.mark.slow
@pytest.mark.parametrize("preset", ["nyuv2", "cityscapes", "celeba"])
def test_paper_preset_runs_one_step_on_fixture_data(preset, tmp_path):
    from coremtl_lite.train import Trainer

    if preset == "nyuv2":
        root = _mtan(tmp_path / "nyuv2", NYU, (24, 32), counts={"train": 4, "val": 2}, n_classes=13)
    elif preset == "cityscapes":
        root = _mtan(tmp_path / "cityscapes", CITY, (16, 32), counts={"train": 4, "val": 2})
    else:
        root = tmp_path / "celeba"
        _celeba_raw(root)
    cfg = paper_config(
        preset,
        [
            f"data.root={root}",
            "data.batch_size=2",
            "data.image_size=32",
            "optim.epochs=1",
            "train.max_steps_per_epoch=1",
            "train.progress=false",
            "train.checkpoint_every=0",
            f"train.out_dir={tmp_path / 'run'}",
            "model.pretrained=false",
            "loss.perceptual=ssim",
        ],
    )
    assert cfg.profile == "paper" and cfg.model.encoder in ("resnet50", "resnet18")
    trainer = Trainer(cfg)
    history = trainer.fit()
    assert trainer.step == 1 and len(history.steps) == 1
    assert all(v == v for k, v in history.steps[0].items() if k.startswith("loss/"))  # finite, not NaN
    results = trainer.evaluate(split="val")
    assert set(results["val"]) == set(cfg.data.tasks)
