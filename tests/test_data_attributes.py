"""ShadedAttributes: labels match their definitions on hand-built scenes, invariant to residuals."""

import pytest
import torch

from coremtl_lite.data import ATTRIBUTE_NAMES, ShadedAttributes, attributes_from_semantic
from coremtl_lite.data.attributes import MAX_ATTRIBUTES


def _scene(objects, tilt=(0.1, -0.1)):
    """A batch of one semantic factor dict from ``[(shape, x, y, size, height), ...]``."""
    k = 5
    valid = torch.zeros(1, k, dtype=torch.bool)
    shape = torch.full((1, k), -1)
    pos, size, height = torch.zeros(1, k, 2), torch.zeros(1, k), torch.zeros(1, k)
    for i, (s, x, y, r, h) in enumerate(objects):
        valid[0, i], shape[0, i] = True, s
        pos[0, i] = torch.tensor([x, y])
        size[0, i], height[0, i] = r, h
    return {
        "num_objects": valid.sum(1),
        "valid": valid,
        "shape": shape,
        "position": pos,
        "size": size,
        "height": height,
        "angle": torch.zeros(1, k),
        "ground_tilt": torch.tensor([tilt]),
        "ground_height": torch.zeros(1),
        "ground_waves": torch.zeros(1, 2, 3),
    }


def test_attributes_match_definitions_on_hand_built_scene():
    # two cones (left-top large, right-bottom small), one tall torus on the right
    sem = _scene([(1, -0.5, 0.5, 0.5, 0.3), (1, 0.5, -0.5, 0.32, 0.3), (5, 0.4, 0.4, 0.35, 0.7)])
    a = dict(zip(ATTRIBUTE_NAMES, attributes_from_semantic(sem)[0].tolist()))
    assert len(ATTRIBUTE_NAMES) == MAX_ATTRIBUTES >= 40
    expect_true = {
        "has_cone",
        "has_torus",
        "at_least_2_objects",
        "at_least_3_objects",
        "cone_left",
        "cone_top",
        "torus_top",
        "cone_large",
        "torus_tall",
        "cone_two_or_more",
        "ground_slopes_up_right",
    }
    for name, value in a.items():
        assert value == (1.0 if name in expect_true else 0.0), name


def test_shaded_attributes_dataset():
    ds = ShadedAttributes(n_attributes=40, size=32, length=64, seed=0)
    assert ds.task_info["attributes"] == {"kind": "attributes", "num_attributes": 40}
    b = ds.get_batch(range(64))
    assert b["attributes"].shape == (64, 40) and b["attributes"].dtype == torch.float32
    assert torch.equal(b["attributes"], attributes_from_semantic(b["factors"]["semantic"], 40))
    rate = b["attributes"].mean(0)
    assert (rate[:10] > 0.05).all() and (rate[:10] < 0.95).all()  # the first attributes are informative
    # invariant to an intervention on the residual factors
    f = ds.sample_factors(range(8))
    other = ds.render(f["semantic"], ds.sample_residual(range(8, 16)))
    assert torch.equal(other["attributes"], ds.render(**f)["attributes"])
    with pytest.raises(ValueError, match="n_attributes"):
        ShadedAttributes(n_attributes=MAX_ATTRIBUTES + 1)


def test_hand_built_scene_renders():
    ds = ShadedAttributes(n_attributes=6, size=32, length=1, seed=0)
    sem = _scene([(0, 0.0, 0.0, 0.3, 0.5)])
    out = ds.render(sem, ds.sample_residual([0], sem))
    assert out["attributes"][0].tolist() == [1, 0, 0, 0, 0, 0]
    seg = out["segmentation"][0]
    assert seg[16, 16] == 1 and seg[0, 0] == 0  # a hemisphere in the middle, ground at the corner
    # the hemisphere's top is at height 0.5 above the (flat at the centre) ground: depth 3 - 0.5
    assert abs(float(out["depth"][0, 0, 16, 16]) - 2.5) < 0.02


def test_each_attribute_is_also_its_own_task():
    from coremtl_lite.data.attributes import ShadedAttributes, attribute_task_names

    scenes = ShadedAttributes(n_attributes=12, size=32, length=8, seed=3)
    names = attribute_task_names(12)
    assert names[0] == "attr_00" and names[-1] == "attr_11"
    assert all(scenes.task_info[n] == {"kind": "attributes", "num_attributes": 1} for n in names)
    batch = scenes.get_batch(torch.arange(8))
    for i, name in enumerate(names):
        assert batch[name].shape == (8, 1)
        assert torch.equal(batch[name][:, 0], batch["attributes"][:, i])
    sample = scenes[5]
    assert torch.equal(sample["attr_04"], sample["attributes"][4:5])
