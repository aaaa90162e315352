"""Prepare NYUv2 or Cityscapes in the LibMTL/MTAN ``.npy`` layout for coremtl_lite.

Where to get the raw data (you download it; nothing is fetched here):
  * NYUv2 (13 classes, depth, normals, 288x384) and Cityscapes (7 classes, depth, 128x256), preprocessed by
    the authors of MTAN (Liu et al., CVPR 2019), linked from https://github.com/lorenmt/mtan and LibMTL's
    docs (https://libmtl.readthedocs.io/en/latest/docs/user_guide/benchmark/nyuv2.html). The originals:
    https://cs.nyu.edu/~silberman/datasets/nyu_depth_v2.html and https://www.cityscapes-dataset.com/.
  * Unpack the archive anywhere; ``--src`` is the folder holding ``train/`` and ``val/`` (or a .zip of it).

The script checks the layout (sub-folders, file count per split, array shapes of every file, and
every value: labels integer ids in [0, classes) or -1, images in [0, 1] or 0..255, depth >= 0, normals
in [-1, 1], nothing NaN), then copies the files to ``--out``. Cityscapes may come in the MTAN layout
(``label_7/``) or LibMTL's (``label/``); the folder name is kept. No official checksums exist for these
archives; every file is instead parsed and checked, and an error names the file. ``--out`` must be
separate from ``--src``. Re-running is cheap (identical files are skipped); a differing existing file,
or files an earlier run left that this one would not write, are only replaced/removed with ``--force``.

    python data_scripts/prepare_mtan.py --dataset nyuv2 --src ~/Downloads/nyuv2 --out data/nyuv2
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import PrepareError, check_separate, copy_file, plan_outputs, progress  # noqa: E402

LAYOUTS = {
    # key folder -> expected shape (H, W, ...) per sample; counts of the official splits
    "nyuv2": {
        "folders": {
            "image": (288, 384, 3),
            "label": (288, 384),
            "depth": (288, 384, 1),
            "normal": (288, 384, 3),
        },
        "counts": {"train": 795, "val": 654},
    },
    "cityscapes": {
        "folders": {"image": (128, 256, 3), "label_7": (128, 256), "depth": (128, 256, 1)},
        "counts": {"train": 2975, "val": 500},
    },
}
CLASSES = {"nyuv2": 13, "cityscapes": 7}
#: the sample-dict key whose value range each folder is checked against
KIND = {
    "image": "image",
    "label": "segmentation",
    "label_7": "segmentation",
    "depth": "depth",
    "normal": "normal",
}


def _find_root(src: Path) -> Path:
    for cand in [src, *src.iterdir()] if src.is_dir() else []:
        if (cand / "train").is_dir() and (cand / "val").is_dir():
            return cand
    raise PrepareError(f"{src} has no train/ and val/ folders (the MTAN layout)")


def prepare(
    dataset: str, src: Path, out: Path, force: bool = False, strict_counts: bool = True, quiet: bool = False
) -> dict[str, int]:
    """Validate and copy; returns the number of samples per split."""
    if dataset not in LAYOUTS:
        raise PrepareError(f"unknown dataset {dataset!r}; choose one of {sorted(LAYOUTS)}")
    if not src.exists():
        raise PrepareError(f"missing raw data: {src}")
    if src.is_dir():
        check_separate(out, src=src)
    from coremtl_lite.data.real import check_values

    layout = LAYOUTS[dataset]
    with tempfile.TemporaryDirectory() as tmp:
        if src.is_file() and zipfile.is_zipfile(src):
            with zipfile.ZipFile(src) as zf:
                zf.extractall(tmp)
            src = Path(tmp)
        root = _find_root(src)
        folders = dict(layout["folders"])
        if (
            dataset == "cityscapes"
            and not (root / "train" / "label_7").is_dir()
            and (root / "train" / "label").is_dir()
        ):
            folders["label"] = folders.pop("label_7")  # LibMTL's layout
        counts = {}
        for split, expected in layout["counts"].items():  # 1. check everything before writing anything
            n = len(list((root / split / "image").glob("*.npy")))
            if n == 0:
                raise PrepareError(f"no images in {root / split / 'image'}")
            if strict_counts and n != expected:
                raise PrepareError(
                    f"{root / split / 'image'} holds {n} samples, the official split has {expected} "
                    f"(use --no-strict-counts for a subset)"
                )
            counts[split] = n
            for folder, shape in folders.items():
                for i in progress(range(n), f"check {dataset}/{split}/{folder}", quiet):
                    f = root / split / folder / f"{i}.npy"
                    if not f.is_file():
                        raise PrepareError(f"missing file {f}")
                    try:
                        arr = np.load(f, mmap_mode="r", allow_pickle=False)
                    except Exception as e:  # noqa: BLE001
                        raise PrepareError(f"corrupt file {f}: {e}") from e
                    if tuple(arr.shape) != shape and not (
                        len(shape) == 3 and shape[2] == 1 and tuple(arr.shape) == shape[:2]
                    ):
                        raise PrepareError(f"{f} has shape {arr.shape}, expected {shape}")
                    try:
                        check_values(np.asarray(arr), f, KIND[folder], CLASSES[dataset])
                    except ValueError as e:
                        raise PrepareError(str(e)) from e
        # 2. exactly these files in the output folders (stale ones: error, or removed with --force), then copy
        plan_outputs(
            {
                out / split / folder / f"{i}.npy"
                for split, n in counts.items()
                for folder in folders
                for i in range(n)
            },
            force,
        )
        for split, n in counts.items():
            for folder in folders:
                for i in progress(range(n), f"copy {dataset}/{split}/{folder}", quiet):
                    copy_file(root / split / folder / f"{i}.npy", out / split / folder / f"{i}.npy", force)
    return counts


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", required=True, choices=sorted(LAYOUTS))
    p.add_argument("--src", required=True, type=Path, help="unpacked folder (or .zip) with train/ and val/")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--force", action="store_true", help="overwrite differing existing files")
    p.add_argument("--no-strict-counts", action="store_true", help="accept a subset of the official splits")
    p.add_argument("--quiet", action="store_true")
    a = p.parse_args(argv)
    try:
        counts = prepare(a.dataset, a.src, a.out, a.force, not a.no_strict_counts, a.quiet)
    except (PrepareError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"{a.dataset} ready in {a.out}: {counts}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
