"""Build Cityscapes-C: the val split of the prepared Cityscapes under four corruptions x five severities.

Needs Cityscapes prepared by ``prepare_mtan.py --dataset cityscapes`` (raw data: see that script).
The corruptions (contrast, defocus_blur, fog, gaussian_noise) follow Hendrycks & Dietterich (2019) /
``imagecorruptions`` (Michaelis et al., 2019) and are implemented in ``coremtl_lite.data.corruptions``;
they are applied at the stored 128x256 resolution with per-image seeds (``--seed``), so the set is
reproducible. Labels and depth are copied. Output: ``<out>/<corruption>/<severity>/{image,label_7,depth}``,
separate from the Cityscapes folder. Re-running skips identical files; differing ones, and files an
earlier run left that this one would not write, need ``--force``.

    python data_scripts/prepare_cityscapes_c.py --cityscapes data/cityscapes --out data/cityscapes_c
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import PrepareError, check_separate, copy_file, plan_outputs, progress, write_npy  # noqa: E402

CORRUPTION_NAMES = ("contrast", "defocus_blur", "fog", "gaussian_noise")


def prepare(
    cityscapes: Path,
    out: Path,
    corruptions=CORRUPTION_NAMES,
    severities=(1, 2, 3, 4, 5),
    seed: int = 0,
    force: bool = False,
    quiet: bool = False,
) -> int:
    import torch

    from coremtl_lite.data.corruptions import corrupt
    from coremtl_lite.data.real import Cityscapes

    check_separate(out, cityscapes=cityscapes)
    val = Cityscapes(cityscapes, "val")  # raises naming any missing folder
    for c in corruptions:
        if c not in CORRUPTION_NAMES:
            raise PrepareError(f"unknown corruption {c!r}; choose from {CORRUPTION_NAMES}")
    bad = [s for s in severities if isinstance(s, bool) or int(s) != s or not 1 <= int(s) <= 5]
    if bad:
        raise PrepareError(f"severities must be integers 1..5, got {bad}")
    jobs = [(c, s, i) for c in corruptions for s in severities for i in range(len(val))]
    plan_outputs(
        {out / c / str(s) / sub / f"{i}.npy" for c, s, i in jobs for sub in ("image", "label_7", "depth")},
        force,
    )
    for c, s, i in progress(jobs, "cityscapes-c", quiet):
        image = val[i]["image"]  # checked by the loader (labels, value ranges)
        seeds = torch.tensor([seed * 1_000_003 + i])
        x = corrupt(image[None], c, int(s), seeds=seeds)[0]
        folder = out / c / str(s)
        write_npy(folder / "image" / f"{i}.npy", x.permute(1, 2, 0).numpy().astype(np.float32), force)
        for key, sub in (("segmentation", "label_7"), ("depth", "depth")):
            copy_file(val.folder / val.keys[key] / f"{i}.npy", folder / sub / f"{i}.npy", force)
    return len(jobs)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cityscapes", required=True, type=Path, help="prepared Cityscapes folder")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--corruptions", nargs="+", default=list(CORRUPTION_NAMES))
    p.add_argument("--severities", nargs="+", type=int, default=[1, 2, 3, 4, 5])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--force", action="store_true")
    p.add_argument("--quiet", action="store_true")
    a = p.parse_args(argv)
    try:
        n = prepare(a.cityscapes, a.out, a.corruptions, a.severities, a.seed, a.force, a.quiet)
    except (PrepareError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"Cityscapes-C ready in {a.out} ({n} images)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
