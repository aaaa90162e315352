"""Write Colored-Cityscapes (paper Appendix I) to disk: Cityscapes recoloured by class.

Needs Cityscapes prepared by ``prepare_mtan.py --dataset cityscapes`` (raw data: see that script). Every
labelled pixel is tinted with a fixed colour of its class (``coremtl_lite.data.real.recolor_by_class``);
``--permuted`` writes the target version with the colours permuted. The loader
``coremtl_lite.data.real.ColoredCityscapes`` recolours on the fly, so this script is only needed to
export the images for other tools. Output: the Cityscapes layout (``label_7/``), in a folder separate
from the source. Re-running skips identical files; differing ones, and files an earlier run left that
this one would not write, need ``--force``.

    python data_scripts/prepare_colored_cityscapes.py --cityscapes data/cityscapes --out data/colored_cityscapes
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import PrepareError, check_separate, copy_file, plan_outputs, progress, write_npy  # noqa: E402


def prepare(
    cityscapes: Path, out: Path, permuted: bool = False, force: bool = False, quiet: bool = False
) -> int:
    from coremtl_lite.data.real import ColoredCityscapes

    check_separate(out, cityscapes=cityscapes)
    n = 0
    sets = {split: ColoredCityscapes(cityscapes, split, permuted=permuted) for split in ("train", "val")}
    plan_outputs(
        {
            out / split / sub / f"{i}.npy"
            for split, ds in sets.items()
            for sub in ("image", "label_7", "depth")
            for i in range(len(ds))
        },
        force,
    )
    for split, ds in sets.items():
        for i in progress(range(len(ds)), f"colored-cityscapes/{split}", quiet):
            sample = ds[i]  # checked by the loader (labels, value ranges)
            write_npy(
                out / split / "image" / f"{i}.npy",
                sample["image"].permute(1, 2, 0).numpy().astype(np.float32),
                force,
            )
            for key, sub in (("segmentation", "label_7"), ("depth", "depth")):
                copy_file(ds.folder / ds.keys[key] / f"{i}.npy", out / split / sub / f"{i}.npy", force)
            n += 1
    return n


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cityscapes", required=True, type=Path)
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--permuted", action="store_true", help="the target domain's permuted colours")
    p.add_argument("--force", action="store_true")
    p.add_argument("--quiet", action="store_true")
    a = p.parse_args(argv)
    try:
        n = prepare(a.cityscapes, a.out, a.permuted, a.force, a.quiet)
    except (PrepareError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"Colored-Cityscapes ready in {a.out} ({n} images)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
