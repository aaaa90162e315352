"""Real-dataset loaders and preparation scripts on tiny fixtures in the real on-disk formats."""

from pathlib import Path

import numpy as np
import pytest
import torch
from _script_helpers import load_script
from PIL import Image

from coremtl_lite.config import get_config
from coremtl_lite.data import build_splits, make_loader
from coremtl_lite.data.real import (
    CITYSCAPES_ID_TO_7,
    GTA5,
    CelebA,
    Cityscapes,
    CityscapesC,
    ColoredCityscapes,
    NYUv2,
    recolor_by_class,
)


def _mtan(root: Path, folders: dict, hw, counts=None, n_classes=7):
    if counts is None:
        counts = {"train": 3, "val": 2}
    rng = np.random.default_rng(0)
    for split, n in counts.items():
        for i in range(n):
            for f, _ch in folders.items():
                (root / split / f).mkdir(parents=True, exist_ok=True)
                if f == "image":
                    a = rng.random((*hw, 3), dtype=np.float32)
                elif f.startswith("label"):
                    a = rng.integers(-1, n_classes, hw).astype(np.float32)
                elif f == "depth":
                    a = rng.random((*hw, 1), dtype=np.float32) * 10
                else:  # unit normals, as MTAN stores them (components in [-1, 1])
                    a = rng.normal(size=(*hw, 3))
                    a = (a / np.linalg.norm(a, axis=-1, keepdims=True)).astype(np.float32)
                np.save(root / split / f / f"{i}.npy", a)
    return root


NYU = {"image": 3, "label": 1, "depth": 1, "normal": 3}
CITY = {"image": 3, "label_7": 1, "depth": 1}


def test_nyuv2_loader(tmp_path):
    root = _mtan(tmp_path / "nyuv2", NYU, (12, 16), n_classes=13)
    ds = NYUv2(root, "train")
    x = ds[1]
    assert len(ds) == 3 and x["image"].shape == (3, 12, 16) and x["segmentation"].dtype == torch.int64
    assert x["depth"].shape == (1, 12, 16) and torch.allclose(x["normal"].norm(dim=0), torch.ones(()))
    raw = np.load(root / "train" / "label" / "1.npy")
    assert torch.equal(x["segmentation"], torch.from_numpy(raw.astype(np.int64)))
    assert ds.task_info["segmentation"]["num_classes"] == 13
    b = next(iter(make_loader(ds, 2, shuffle=False, seed=0)))
    assert b["image"].shape == (2, 3, 12, 16)
    # a missing or corrupt file is named
    (root / "train" / "depth" / "2.npy").unlink()
    with pytest.raises(FileNotFoundError, match="2.npy"):
        ds[2]
    (root / "train" / "label" / "0.npy").write_bytes(b"not an array")
    with pytest.raises(ValueError, match="0.npy"):
        ds[0]
    with pytest.raises(FileNotFoundError, match="image"):
        NYUv2(tmp_path / "nowhere", "train")


def test_cityscapes_family_and_build_splits(tmp_path):
    city = _mtan(tmp_path / "cityscapes", CITY, (8, 16))
    x = Cityscapes(city, "val")[0]
    assert x["segmentation"].max() <= 6 and x["segmentation"].min() >= -1 and x["depth"].shape == (1, 8, 16)
    # Colored-Cityscapes: a labelled pixel's colour is a function of its class only (up to luminance)
    c, p = ColoredCityscapes(city, "val")[0], ColoredCityscapes(city, "val", permuted=True)[0]
    assert torch.equal(c["segmentation"], x["segmentation"]) and not torch.equal(c["image"], p["image"])
    void = x["segmentation"] < 0
    assert torch.equal(c["image"][:, void], x["image"][:, void])
    seg = torch.zeros(4, 4, dtype=torch.long)
    flat = recolor_by_class(torch.full((3, 4, 4), 0.5), seg)
    assert torch.allclose(flat[:, 0, 0], flat[:, 3, 3])
    # Cityscapes-C via its script, then the splits with corruption domains
    cc = load_script("prepare_cityscapes_c")
    n = cc.prepare(
        city, tmp_path / "cityscapes_c", corruptions=("fog", "contrast"), severities=(1, 3), quiet=True
    )
    assert n == 8
    assert cc.prepare(city, tmp_path / "cityscapes_c", corruptions=("fog",), severities=(1,), quiet=True) == 2
    ds = CityscapesC(tmp_path / "cityscapes_c", "fog", 3)
    assert torch.equal(ds[1]["segmentation"], Cityscapes(city, "val")[1]["segmentation"])
    cfg = get_config(
        "ci",
        [
            "data.dataset=cityscapes",
            f"data.root={city}",
            "data.eval_domains=source,corrupt:contrast:3",
            "data.tasks=segmentation,depth",
        ],
    )
    sp = build_splits(cfg.data, 0)
    assert len(sp.train) == 3 and set(sp.test) == {"source", "corrupt:contrast:3"}
    cfg = get_config(
        "ci",
        [
            "data.dataset=colored_cityscapes",
            f"data.root={city}",
            "data.eval_domains=colored,colored-permuted",
            "data.tasks=segmentation,depth",
        ],
    )
    sp = build_splits(cfg.data, 0)
    assert not torch.equal(sp.test["colored"][0]["image"], sp.test["colored-permuted"][0]["image"])
    # Colored-Cityscapes export script matches the on-the-fly loader
    col = load_script("prepare_colored_cityscapes")
    col.prepare(city, tmp_path / "colored", quiet=True)
    assert np.allclose(
        np.load(tmp_path / "colored" / "val" / "image" / "0.npy"), c["image"].permute(1, 2, 0).numpy()
    )


def test_prepare_mtan_validates_copies_and_is_idempotent(tmp_path):
    mod = load_script("prepare_mtan")
    src = _mtan(tmp_path / "raw" / "nyuv2", NYU, (288, 384), counts={"train": 2, "val": 1}, n_classes=13)
    out = tmp_path / "nyuv2"
    with pytest.raises(mod.PrepareError, match="official split"):
        mod.prepare("nyuv2", src, out, quiet=True)
    counts = mod.prepare("nyuv2", src, out, strict_counts=False, quiet=True)
    assert counts == {"train": 2, "val": 1} and len(NYUv2(out, "train")) == 2
    assert (
        mod.main(
            ["--dataset", "nyuv2", "--src", str(src), "--out", str(out), "--no-strict-counts", "--quiet"]
        )
        == 0
    )  # idempotent re-run
    # a differing existing file is not overwritten without --force
    np.save(out / "val" / "depth" / "0.npy", np.zeros((288, 384, 1), np.float32))
    assert (
        mod.main(
            ["--dataset", "nyuv2", "--src", str(src), "--out", str(out), "--no-strict-counts", "--quiet"]
        )
        == 1
    )
    assert (
        mod.main(
            [
                "--dataset",
                "nyuv2",
                "--src",
                str(src),
                "--out",
                str(out),
                "--no-strict-counts",
                "--quiet",
                "--force",
            ]
        )
        == 0
    )
    assert np.array_equal(np.load(out / "val" / "depth" / "0.npy"), np.load(src / "val" / "depth" / "0.npy"))
    # a wrongly shaped file is rejected with its name
    np.save(src / "train" / "image" / "1.npy", np.zeros((10, 10, 3), np.float32))
    with pytest.raises(mod.PrepareError, match="1.npy"):
        mod.prepare("nyuv2", src, tmp_path / "other", strict_counts=False, quiet=True)


def test_prepare_gta5_maps_ids_and_loads(tmp_path):
    mod = load_script("prepare_gta5")
    src = tmp_path / "raw"
    (src / "images").mkdir(parents=True)
    (src / "labels").mkdir()
    rng = np.random.default_rng(0)
    for k in range(4):
        Image.fromarray(rng.integers(0, 255, (20, 40, 3), dtype=np.uint8)).save(
            src / "images" / f"{k:05d}.png"
        )
        ids = np.zeros((20, 40), np.uint8)
        ids[:, :10], ids[:, 10:20], ids[:, 20:30], ids[:, 30:] = 7, 23, 26, 0  # road, sky, car, unlabeled
        Image.fromarray(ids).save(src / "labels" / f"{k:05d}.png")
    counts = mod.prepare(src, tmp_path / "gta5", height=8, width=16, val_fraction=0.25, quiet=True)
    assert counts == {"train": 3, "val": 1}
    ds = GTA5(tmp_path / "gta5", "train")
    x = ds[0]
    assert x["image"].shape == (3, 8, 16) and "depth" not in x and "depth" not in ds.task_info
    assert x["segmentation"][0].tolist() == [0] * 4 + [4] * 4 + [6] * 4 + [-1] * 4  # flat, sky, vehicle, void
    assert CITYSCAPES_ID_TO_7.shape == (34,) and CITYSCAPES_ID_TO_7[24] == 5 and CITYSCAPES_ID_TO_7[33] == 6
    assert mod.prepare(src, tmp_path / "gta5", height=8, width=16, val_fraction=0.25, quiet=True) == counts
    # GTA5 -> Cityscapes splits
    _mtan(tmp_path / "cityscapes", CITY, (8, 16))
    cfg = get_config("ci", ["data.dataset=gta5", f"data.root={tmp_path / 'gta5'}", "data.tasks=segmentation"])
    sp = build_splits(cfg.data, 0)
    assert len(sp.test["target"]) == 2 and len(sp.test["source"]) == 1


def _celeba_raw(root: Path, n=6):
    names = [f"{i:06d}.jpg" for i in range(1, n + 1)]
    (root / "img_align_celeba").mkdir(parents=True)
    rng = np.random.default_rng(0)
    attrs = ["5_o_Clock_Shadow", "Arched_Eyebrows"] + [f"Attr_{k}" for k in range(38)]
    lines = [str(n), " ".join(attrs)]
    for i, name in enumerate(names):
        Image.fromarray(rng.integers(0, 255, (218, 178, 3), dtype=np.uint8)).save(
            root / "img_align_celeba" / name
        )
        vals = ["1" if (i + k) % 3 == 0 else "-1" for k in range(40)]
        lines.append(name + "  " + " ".join(vals))
    (root / "list_attr_celeba.txt").write_text("\n".join(lines) + "\n")
    (root / "list_eval_partition.txt").write_text(
        "\n".join(f"{name} {[0, 0, 0, 1, 2, 2][i]}" for i, name in enumerate(names)) + "\n"
    )
    return names


def test_celeba_loader_and_script(tmp_path):
    raw = tmp_path / "raw"
    _celeba_raw(raw)
    ds = CelebA(raw, "train", num_attributes=10, size=32)
    x = ds[1]
    assert len(ds) == 3 and x["image"].shape == (3, 32, 32) and x["attributes"].shape == (10,)
    assert x["attributes"].tolist() == [1.0 if (1 + k) % 3 == 0 else 0.0 for k in range(10)]
    assert len(CelebA(raw, "test", 40, 32)) == 2 and ds.task_info["attributes"]["num_attributes"] == 10
    mod = load_script("prepare_celeba")
    with pytest.raises(mod.PrepareError, match="checksum mismatch"):
        mod.prepare(raw, tmp_path / "celeba", size=32, quiet=True)
    assert mod.prepare(raw, tmp_path / "celeba", size=32, verify=False, quiet=True) == 6
    assert mod.prepare(raw, tmp_path / "celeba", size=32, verify=False, quiet=True) == 0  # idempotent
    prepared = CelebA(tmp_path / "celeba", "train", 10, size=32)
    assert prepared.image_dir.name == "images_128"
    assert (prepared[1]["image"] - x["image"]).abs().max() <= 1.0 / 255 + 1e-6
    cfg = get_config(
        "ci",
        [
            "data.dataset=celeba",
            f"data.root={tmp_path / 'celeba'}",
            "data.tasks=attributes",
            "data.eval_domains=source",
        ],
    )
    assert len(build_splits(cfg.data, 0).test["source"]) == 2
    # corrupt / missing files are named
    (raw / "list_eval_partition.txt").write_text("000001.jpg 7\n")
    with pytest.raises(ValueError, match="list_eval_partition"):
        CelebA(raw, "train")
    (tmp_path / "celeba" / "images_128" / "000002.png").unlink()
    with pytest.raises(FileNotFoundError, match="000002.png"):
        prepared[1]
