"""ShadedScenes: determinism, the SCM intervention, geometry, domain statistics, loaders."""

import math

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression

from coremtl_lite.config import get_config
from coremtl_lite.data import ShadedScenes, build_splits, make_loader, rerender_intervention
from coremtl_lite.data.corruptions import corruption_strength
from coremtl_lite.data.loading import flip_batch
from coremtl_lite.data.scenes import COLORED_PALETTE, COLORED_PERMUTATION, NUM_CLASSES, lighting_sh
from coremtl_lite.shading import sh_shading


def _assert_equal_nested(a, b, atol=0.0):
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            _assert_equal_nested(a[k], b[k], atol)
    elif atol == 0.0 or not a.is_floating_point():
        assert torch.equal(a, b)
    else:
        assert torch.allclose(a, b, rtol=0.0, atol=atol)


def test_sample_dict_contract():
    s = ShadedScenes(size=32, length=10, seed=0)
    x = s[4]
    assert x["image"].shape == (3, 32, 32) and x["image"].dtype == torch.float32
    assert 0.0 <= x["image"].min() and x["image"].max() <= 1.0
    assert x["segmentation"].shape == (32, 32) and x["segmentation"].dtype == torch.int64
    assert x["segmentation"].min() >= -1 and x["segmentation"].max() < NUM_CLASSES
    assert x["depth"].shape == (1, 32, 32) and (x["depth"] > 0).all()
    assert x["normal"].shape == (3, 32, 32)
    assert s.task_info["segmentation"] == {"kind": "segmentation", "num_classes": 7}
    assert x["factors"]["residual"]["sh"].shape == (3, 9)
    assert x["factors"]["semantic"]["valid"].shape == (5,)
    with pytest.raises(IndexError):
        s.get_batch([10])
    with pytest.raises(ValueError, match="domain"):
        ShadedScenes(domain="tagret")
    with pytest.raises(ValueError, match="corruption"):
        ShadedScenes(domain="corrupt:fog:6")


def test_determinism_and_batch_independence():
    a = ShadedScenes(size=32, length=20, seed=3)
    b = ShadedScenes(size=32, length=20, seed=3)
    batch = a.get_batch([2, 7, 11])
    _assert_equal_nested(batch, b.get_batch([2, 7, 11]))
    # a scene is the same whichever batch renders it (up to the last bit of vectorised sin/pow)
    single = a[7]
    _assert_equal_nested(
        single,
        {
            k: (
                v[1]
                if not isinstance(v, dict)
                else {kk: {kkk: vvv[1] for kkk, vvv in vv.items()} for kk, vv in v.items()}
            )
            for k, v in batch.items()
        },
        atol=1e-6,
    )
    assert torch.equal(single["segmentation"], batch["segmentation"][1])
    other = ShadedScenes(size=32, length=20, seed=4).get_batch([2, 7, 11])
    assert not torch.equal(other["image"], batch["image"])
    # offsets index the same stream: scene offset+i of one set is scene i of the other
    shifted = ShadedScenes(size=32, length=10, seed=3, offset=5)
    assert torch.allclose(shifted[2]["image"], a[7]["image"], rtol=0.0, atol=1e-6)


def test_intervention_keeps_labels_and_changes_image():
    s = ShadedScenes(size=32, length=16, seed=1)
    f = s.sample_factors(range(8))
    orig = s.render(**f)
    r2 = s.sample_residual(range(8, 16))  # residuals of other scenes: do(r = r')
    new = s.render(f["semantic"], r2)
    for k in ("segmentation", "depth", "normal"):
        assert torch.equal(orig[k], new[k])
    assert (orig["image"] - new["image"]).abs().mean() > 0.02
    # the target residuals of the same scene: same labels, other image (a counterfactual pair)
    t = ShadedScenes(domain="target", size=32, length=16, seed=1)
    tb = t.get_batch(range(8))
    assert torch.equal(tb["segmentation"], orig["segmentation"]) and torch.equal(tb["depth"], orig["depth"])
    assert not torch.equal(tb["image"], orig["image"])


def test_rerender_intervention_widget_logic():
    s = ShadedScenes(size=32, length=4, seed=0)
    out = rerender_intervention(
        s, 1, light_azimuth=1.0, light_elevation=0.5, light_temperature=8000.0, hue_shift=0.3, exposure=1.2
    )
    assert out["label_change"] == {"segmentation": 0.0, "depth": 0.0, "normal": 0.0}
    assert out["image_change"] > 0.01
    r = out["intervened"]["factors"]["residual"]
    assert torch.allclose(
        r["light_dir"][0],
        torch.tensor([math.cos(0.5) * math.cos(1.0), math.cos(0.5) * math.sin(1.0), math.sin(0.5)]),
    )
    assert torch.allclose(r["sh"], lighting_sh(r))
    with pytest.raises(KeyError, match="unknown residual factor"):
        s.intervene(s.sample_residual([0]), colour=1.0)


def test_lighting_sh_approximates_clamped_cosine_plus_ambient():
    s = ShadedScenes(size=16, length=4, seed=0)
    r = s.sample_residual([0])
    r["light_temperature"] = torch.tensor([6500.0])  # white tint
    d = r["light_dir"][0]
    normals = torch.randn(1, 3, 8, 8)
    normals = normals / normals.norm(dim=1, keepdim=True)
    shade = sh_shading(normals, lighting_sh(r))[0, 0]
    expect = r["light_intensity"][0] * (normals[0] * d[:, None, None]).sum(0).clamp_min(0) + r["ambient"][0]
    # order-2 SH reproduces the clamped cosine to within ~0.1 of the light's intensity (Ramamoorthi 2001)
    assert (shade - expect).abs().max() < 0.12 * r["light_intensity"][0]


def test_normals_unit_and_consistent_with_depth_gradient():
    n = 48
    s = ShadedScenes(size=n, length=32, seed=2)
    f = s.sample_factors(range(32))
    g = s.geometry(f["semantic"])
    normal, depth, surf = g["normal"], g["depth"][:, 0], g["surface"]
    assert torch.allclose(normal.norm(dim=1), torch.ones(()), atol=1e-5)
    assert (normal[:, 2] > 0).all()
    step = 2.0 / n
    # central differences; x to the right (columns), y up (rows go down)
    ddx = (depth[:, 1:-1, 2:] - depth[:, 1:-1, :-2]) / (2 * step)
    ddy = -(depth[:, 2:, 1:-1] - depth[:, :-2, 1:-1]) / (2 * step)
    nx, ny, nz = (normal[:, i, 1:-1, 1:-1] for i in range(3))
    same = torch.ones_like(nz, dtype=torch.bool)
    for di in (-1, 0, 1):
        for dj in (-1, 0, 1):
            same &= surf[:, 1 + di : n - 1 + di, 1 + dj : n - 1 + dj] == surf[:, 1:-1, 1:-1]
    ok = same & (nz > 0.6)
    # depth = CAMERA_HEIGHT - z, so d depth / dx = -dz/dx = n_x / n_z
    err = torch.maximum((ddx - nx / nz).abs(), (ddy - ny / nz).abs())[ok]
    assert ok.sum() > 1000
    assert err.median() < 0.02 and torch.quantile(err, 0.95) < 0.25
    # ground pixels: the rolling ground is smooth, so central differences agree to O(step^2)
    ground = ok & (surf[:, 1:-1, 1:-1] == 5)
    assert torch.allclose(ddx[ground], (nx / nz)[ground], atol=2e-3)
    assert torch.allclose(ddy[ground], (ny / nz)[ground], atol=2e-3)


def _object_colour_probe(domain: str, n_scenes: int = 240) -> float:
    """Accuracy of a linear probe predicting an object's class from its mean visible chromaticity."""
    s = ShadedScenes(domain=domain, size=32, length=n_scenes, seed=0, rho=0.5)
    f = s.sample_factors(range(n_scenes))
    out = s.render(**f)
    surf = s.geometry(f["semantic"])["surface"]
    feats, labels = [], []
    for b in range(n_scenes):
        for k in range(5):
            if not f["semantic"]["valid"][b, k]:
                continue
            m = surf[b] == k
            if m.sum() < 8:
                continue
            rgb = out["image"][b][:, m].mean(1)
            feats.append((rgb / rgb.sum().clamp_min(1e-6)).numpy())
            labels.append(int(f["semantic"]["shape"][b, k]))
    x, y = np.stack(feats), np.array(labels)
    half = len(y) // 2
    clf = LogisticRegression(max_iter=2000, C=100.0).fit(x[:half], y[:half])
    return float(clf.score(x[half:], y[half:]))


def test_domain_statistics_colour_class_dependence():
    keyed, src, tgt = (
        _object_colour_probe("rho:1"),
        _object_colour_probe("source"),
        _object_colour_probe("target"),
    )
    assert keyed > 0.9  # rho = 1, the class-keyed palette: colour reveals the class
    assert 0.35 < src < keyed - 0.2  # rho = 0.5: half of the surfaces keep the class's colour
    assert tgt < 0.3  # chance is 1/6: colour independent of the class


def test_domain_statistics_lighting_follows_layout_in_source_only():
    def corr(domain):
        s = ShadedScenes(domain=domain, size=16, length=400, seed=0, severity=1.0)  # the far end of the shift
        f = s.sample_factors(range(400))
        pos, valid = f["semantic"]["position"], f["semantic"]["valid"].float()
        centroid = (pos * valid[..., None]).sum(1) / valid.sum(1, keepdim=True)
        d = f["residual"]["light_dir"]
        return float(torch.nn.functional.cosine_similarity(centroid, d[:, :2], dim=1).mean())

    assert corr("source") > 0.8 and abs(corr("target")) < 0.1


def test_colored_domains_fixed_and_permuted_colours():
    c = ShadedScenes(domain="colored", size=16, length=20, seed=0)
    p = ShadedScenes(domain="colored-permuted", size=16, length=20, seed=0)
    fc, fp = c.sample_factors(range(20)), p.sample_factors(range(20))
    cls = torch.cat([fc["semantic"]["shape"].clamp_min(0) + 1, torch.zeros(20, 1, dtype=torch.long)], 1)
    assert torch.equal(fc["residual"]["albedo"], COLORED_PALETTE[cls])
    assert torch.equal(fp["residual"]["albedo"], COLORED_PALETTE[torch.tensor(COLORED_PERMUTATION)[cls]])
    assert all(i != j for i, j in enumerate(COLORED_PERMUTATION))
    # only the colours differ between the two
    assert torch.equal(fc["residual"]["light_dir"], fp["residual"]["light_dir"])


@pytest.mark.parametrize("name", ["contrast", "defocus_blur", "fog", "gaussian_noise"])
def test_corrupt_domains_monotonic_in_severity(name):
    clean = ShadedScenes(size=48, length=8, seed=0).get_batch(range(8))["image"]
    dists = []
    for sev in range(1, 6):
        b = ShadedScenes(domain=f"corrupt:{name}:{sev}", size=48, length=8, seed=0).get_batch(range(8))
        assert torch.equal(
            b["segmentation"], ShadedScenes(size=48, length=8, seed=0).get_batch(range(8))["segmentation"]
        )
        dists.append(corruption_strength(clean, b["image"], name))
    assert dists[0] > 0 and all(a < b for a, b in zip(dists, dists[1:])), dists


def test_make_loader_deterministic_and_sharded():
    s = ShadedScenes(size=16, length=37, seed=0, with_factors=False)
    full = [b["image"] for b in make_loader(s, 8, shuffle=True, seed=5, epoch=1)]
    again = [b["image"] for b in make_loader(s, 8, shuffle=True, seed=5, epoch=1)]
    assert len(full) == 5 and all(torch.equal(a, b) for a, b in zip(full, again))
    other_epoch = next(iter(make_loader(s, 8, shuffle=True, seed=5, epoch=2)))["image"]
    assert not torch.equal(other_epoch, full[0])
    # DDP: ranks get disjoint contiguous slices whose concatenation is the global batch
    ranks = [list(make_loader(s, 8, shuffle=True, seed=5, epoch=1, rank=r, world_size=2)) for r in range(2)]
    for i, g in enumerate(full):
        assert torch.allclose(torch.cat([ranks[0][i]["image"], ranks[1][i]["image"]]), g, rtol=0, atol=1e-6)
    assert len(make_loader(s, 8, shuffle=False, seed=0, drop_last=True)) == 4
    # the datasets without get_batch go through default_collate over __getitem__
    items = [s[i] for i in range(37)]

    class Plain:
        def __len__(self):
            return 37

        def __getitem__(self, i):
            return items[i]

    plain = next(iter(make_loader(Plain(), 8, shuffle=True, seed=5, epoch=1)))
    assert torch.allclose(plain["image"], full[0], rtol=0, atol=1e-6)


def test_a_loader_reuses_an_epochs_order_until_an_input_changes():
    # the held-out hook asks for one batch of the validation order every step: computed once per epoch
    s = ShadedScenes(size=16, length=37, seed=0, with_factors=False)
    loader = make_loader(s, 8, shuffle=True, seed=5)

    def fresh(batch_size=8, **kw):
        args = {"shuffle": True, "seed": 5, "epoch": loader.epoch, **kw}
        return [b.tolist() for b in make_loader(s, batch_size, **args).global_batches()]

    first = [b.tolist() for b in loader.global_batches()]
    assert [b.tolist() for b in loader.global_batches()] == first == fresh()
    loader.global_batches().pop()  # callers get their own list
    assert len(loader.global_batches()) == 5
    loader.set_epoch(3)
    assert [b.tolist() for b in loader.global_batches()] == fresh() != first
    loader.seed = 6
    assert [b.tolist() for b in loader.global_batches()] == fresh(seed=6)
    loader.batch_size, loader.drop_last = 10, True
    assert [b.tolist() for b in loader.global_batches()] == fresh(seed=6, batch_size=10, drop_last=True)


def test_flip_batch_mirrors_labels_and_normals():
    b = ShadedScenes(size=16, length=4, seed=0).get_batch(range(4))
    g = torch.Generator().manual_seed(0)
    out = flip_batch(b, g, p=1.0)
    assert out["flipped"].all()
    assert torch.equal(out["segmentation"], b["segmentation"].flip(-1))
    assert torch.equal(out["normal"][:, 0], -b["normal"][:, 0].flip(-1))
    assert torch.equal(out["normal"][:, 1], b["normal"][:, 1].flip(-1))


def test_build_splits_disjoint_and_domains():
    cfg = get_config("ci", ["data.eval_domains=source,target,corrupt:fog:2"])
    sp = build_splits(cfg.data, seed=0)
    assert set(sp.test) == {"source", "target", "corrupt:fog:2"}
    ranges = [range(d.offset, d.offset + len(d)) for d in (sp.train, sp.val, sp.test["source"])]
    assert all(set(a).isdisjoint(b) for i, a in enumerate(ranges) for b in ranges[i + 1 :])
    assert sp.train.size == cfg.data.image_size and len(sp.train) == cfg.data.train_size


def test_repr_says_which_law_the_domain_draws():
    # the dataset's rho is the source's; the target draws without the shortcut, at the dataset's severity
    t = repr(ShadedScenes(domain="target", size=16, length=4, rho=0.5, severity=0.25))
    assert "rho=0.5, severity=0.25)" in t and "[draws: rho 0 " in t and "colour 0.25" in t
    s = repr(ShadedScenes(domain="only:lighting", size=16, length=4, rho=0.9))
    assert "[draws: rho 0.9 (class-keyed colour kept with p 0.9); shift colour 0, texture 0, lighting 1" in s
