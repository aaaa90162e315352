"""Prepare GTA5 (Richter et al., ECCV 2016) as the source domain of GTA5 -> Cityscapes.

Where to get the raw data (you download it; nothing is fetched here): the official page
https://download.visinf.tu-darmstadt.de/data/from_games/ (the ``images`` and ``labels`` zip parts).
Unpack them so that ``--src`` holds ``images/00001.png ...`` and ``labels/00001.png ...``.

Labels use the Cityscapes label ids; they are mapped to the 7 Cityscapes categories of the MTAN
Cityscapes set (flat, construction, object, nature, sky, human, vehicle; void -> -1), and images and
labels are resized to 128x256 (bilinear / nearest) into the Cityscapes ``.npy`` layout
(``<out>/{train,val}/{image,label_7}/<i>.npy``). GTA5 has no depth maps. The val split is a seeded
``--val-fraction`` (strictly between 0 and 1, leaving both splits non-empty) of the images. No official
checksums are published; every PNG is decoded and checked (matching sizes, a single-channel id map).
Ids outside the Cityscapes table (0..33, e.g. 255) are void. ``--out`` must be separate from ``--src``.
Re-running skips identical outputs; differing ones need ``--force``, and so do files an earlier run
left that this one would not write (a new split or seed): ``--force`` removes them, so no image of
the new validation split stays behind in train.

    python data_scripts/prepare_gta5.py --src ~/Downloads/gta5 --out data/gta5
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import PrepareError, check_separate, plan_outputs, progress, write_npy  # noqa: E402


def convert(image_path: Path, label_path: Path, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """One GTA5 pair -> (image (H,W,3) float32 in [0,1], label_7 (H,W) float32 with -1 void)."""
    from PIL import Image

    from coremtl_lite.data.real import CITYSCAPES_ID_TO_7

    for p in (image_path, label_path):
        if not p.is_file():
            raise PrepareError(f"missing raw file: {p}")
    try:
        with Image.open(image_path) as im, Image.open(label_path) as lab:
            if im.size != lab.size:
                raise PrepareError(f"{image_path} is {im.size} but {label_path} is {lab.size}")
            img = (
                np.asarray(im.convert("RGB").resize((width, height), Image.BILINEAR), dtype=np.float32)
                / 255.0
            )
            ids = np.asarray(lab.resize((width, height), Image.NEAREST)).astype(np.int64)
    except OSError as e:
        raise PrepareError(f"corrupt image {image_path} or {label_path}: {e}") from e
    if ids.ndim != 2:
        raise PrepareError(f"{label_path} is not a single-channel id map (shape {ids.shape})")
    if img.ndim != 3 or img.shape[2] != 3:
        raise PrepareError(f"{image_path} is not an RGB image (shape {img.shape})")
    lab7 = np.where((ids >= 0) & (ids < len(CITYSCAPES_ID_TO_7)), CITYSCAPES_ID_TO_7[ids.clip(0, 33)], -1)
    return img, lab7.astype(np.float32)


def prepare(
    src: Path,
    out: Path,
    height: int = 128,
    width: int = 256,
    val_fraction: float = 0.1,
    seed: int = 0,
    force: bool = False,
    quiet: bool = False,
) -> dict[str, int]:
    check_separate(out, src=src)
    if not 0.0 < val_fraction < 1.0:
        raise PrepareError(f"--val-fraction must be strictly between 0 and 1, got {val_fraction}")
    images = sorted((src / "images").glob("*.png"))
    if not images:
        raise PrepareError(f"no PNG images in {src / 'images'}")
    missing = [p.name for p in images if not (src / "labels" / p.name).is_file()]
    if missing:
        raise PrepareError(f"{len(missing)} images have no label in {src / 'labels'}, e.g. {missing[0]}")
    order = np.random.default_rng(seed).permutation(len(images))
    n_val = int(round(val_fraction * len(images)))
    if not 0 < n_val < len(images):
        raise PrepareError(
            f"--val-fraction {val_fraction} of {len(images)} images leaves an empty split ({n_val} for val)"
        )
    splits = {"val": sorted(order[:n_val].tolist()), "train": sorted(order[n_val:].tolist())}
    plan_outputs(
        {
            out / split / sub / f"{i}.npy"
            for split, idx in splits.items()
            for sub in ("image", "label_7")
            for i in range(len(idx))
        },
        force,
    )
    for split, idx in splits.items():
        for i, k in enumerate(progress(idx, f"gta5/{split}", quiet)):
            img, lab = convert(images[k], src / "labels" / images[k].name, height, width)
            write_npy(out / split / "image" / f"{i}.npy", img, force)
            write_npy(out / split / "label_7" / f"{i}.npy", lab, force)
    return {k: len(v) for k, v in splits.items()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--src", required=True, type=Path)
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--height", type=int, default=128)
    p.add_argument("--width", type=int, default=256)
    p.add_argument("--val-fraction", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--force", action="store_true")
    p.add_argument("--quiet", action="store_true")
    a = p.parse_args(argv)
    try:
        counts = prepare(a.src, a.out, a.height, a.width, a.val_fraction, a.seed, a.force, a.quiet)
    except (PrepareError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"GTA5 ready in {a.out}: {counts}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
