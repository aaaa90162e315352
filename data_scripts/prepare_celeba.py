"""Prepare CelebA for coremtl_lite: check the official files, write 128x128 images.

Where to get the raw data (you download it; nothing is fetched here): the official CelebA page
https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html ("Align&Cropped Images" and "Anno" / "Eval" on its
Google Drive): ``img_align_celeba.zip`` (or the unpacked ``img_align_celeba/``), ``list_attr_celeba.txt``
and ``list_eval_partition.txt``, all in one folder (``--src``).

The MD5 checksums of the three files are the ones torchvision's ``CelebA`` dataset checks. The script
copies the two text files (checking every attribute is 1 or -1 and every partition 0, 1 or 2), unpacks
the zip if needed into a temporary folder inside ``--out`` (the source folder is never written), and
writes ``images_128/<name>.png`` (centre square crop, resized to ``--size``) with a progress bar.
Re-running skips finished images; existing outputs are only replaced with ``--force``, which also
removes images an earlier run left that are not in the attribute list.

    python data_scripts/prepare_celeba.py --src ~/Downloads/celeba --out data/celeba
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import PrepareError, check_md5, check_separate, copy_file, plan_outputs, progress, temp_path  # noqa: E402

MD5 = {  # torchvision.datasets.CelebA.file_list
    "img_align_celeba.zip": "00d2c5bc6d35e252742224ab0c1e8fcb",
    "list_attr_celeba.txt": "75e246fa4810816ffd6ee81facbd244c",
    "list_eval_partition.txt": "d32c9cbf5e040fd4025c592c306e6668",
}


def prepare(
    src: Path, out: Path, size: int = 128, force: bool = False, verify: bool = True, quiet: bool = False
) -> int:
    """Returns the number of images written."""
    from PIL import Image

    from coremtl_lite.data.real import load_celeba_image, read_celeba_attributes, read_celeba_partition

    if not src.is_dir():
        raise PrepareError(f"missing raw data folder: {src}")
    check_separate(out, src=src)
    for name in ("list_attr_celeba.txt", "list_eval_partition.txt"):
        check_md5(src / name, MD5[name] if verify else None)
    try:  # check both lists before writing anything
        _, rows = read_celeba_attributes(src / "list_attr_celeba.txt")
        read_celeba_partition(src / "list_eval_partition.txt")
    except ValueError as e:
        raise PrepareError(str(e)) from e
    out.mkdir(parents=True, exist_ok=True)
    dst_dir = out / "images_128"
    plan_outputs({dst_dir / (Path(name).stem + ".png") for name in rows}, force)
    for name in ("list_attr_celeba.txt", "list_eval_partition.txt"):
        copy_file(src / name, out / name, force)
    written = 0
    dst_dir.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out, prefix=".unpacked-") as tmp:
        image_dir = src / "img_align_celeba"
        if not image_dir.is_dir():
            zpath = src / "img_align_celeba.zip"
            check_md5(zpath, MD5["img_align_celeba.zip"] if verify else None)
            with zipfile.ZipFile(zpath) as zf:
                zf.extractall(tmp)
            image_dir = Path(tmp) / "img_align_celeba"
        for name in progress(sorted(rows), "celeba images", quiet):
            dst = dst_dir / (Path(name).stem + ".png")
            if dst.exists() and not force:
                continue
            img = load_celeba_image(image_dir / name, size)
            arr = (img.permute(1, 2, 0).numpy() * 255.0 + 0.5).clip(0, 255).astype("uint8")
            tmp_png = temp_path(dst)
            Image.fromarray(arr).save(tmp_png, format="PNG")
            tmp_png.replace(dst)
            written += 1
    return written


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--src", required=True, type=Path)
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--force", action="store_true", help="rewrite existing outputs")
    p.add_argument("--no-verify", action="store_true", help="skip the MD5 checks (e.g. for a subset)")
    p.add_argument("--quiet", action="store_true")
    a = p.parse_args(argv)
    try:
        n = prepare(a.src, a.out, a.size, a.force, not a.no_verify, a.quiet)
    except (PrepareError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"CelebA ready in {a.out} ({n} images written)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
