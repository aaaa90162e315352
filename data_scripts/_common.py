"""Helpers shared by the data preparation scripts: checksums, safe idempotent writes, progress bars.

Rules every script keeps (nothing lost, nothing stale):

* the output folder never equals, lies inside, or contains a source folder (:func:`check_separate`),
  so not even ``--force`` can overwrite the raw data;
* before writing, the script lists every file it will produce (:func:`plan_outputs`): files an
  earlier run left in the same folders that this run would not write (a different split, fewer
  images) are an error without ``--force`` and are removed with it;
* writes go through a hidden temporary file renamed into place; temporary files of a killed run
  (``.<name>.tmp``) are removed by the next one.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import numpy as np
from tqdm import tqdm


class PrepareError(RuntimeError):
    """A preparation step cannot proceed (missing raw file, bad checksum, would overwrite)."""


def md5sum(path: Path, chunk: int = 1 << 20) -> str:
    """The MD5 hex digest of a file."""
    h = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def check_md5(path: Path, expected: str | None) -> None:
    """Raise if ``path`` is missing or (when ``expected`` is known) its MD5 differs."""
    if not path.is_file():
        raise PrepareError(f"missing raw file: {path}")
    if expected is not None:
        got = md5sum(path)
        if got != expected:
            raise PrepareError(
                f"checksum mismatch for {path}: md5 {got}, expected {expected} (re-download it)"
            )


def check_separate(out: Path, **sources: Path) -> None:
    """Refuse an output folder that is, lies inside, or contains one of the ``sources`` (named by option)."""
    o = out.resolve()
    for option, src in sources.items():
        s = src.resolve()
        if o == s or s in o.parents or o in s.parents:
            raise PrepareError(
                f"--out {out} overlaps the source {option} {src}; the prepared data must go to a "
                "separate folder (the source is never written)"
            )


def temp_path(path: Path) -> Path:
    """The hidden temporary name of ``path`` during a write (never matched by ``*.npy`` / ``*.png``)."""
    return path.with_name(f".{path.name}.tmp")


def plan_outputs(planned: set[Path], force: bool) -> None:
    """Make the folders of ``planned`` hold exactly what this run writes.

    Temporary files of a killed run are removed. Any other file in those folders that is not planned
    (left by an earlier run with another split or more samples) is an error naming it, or with
    ``force`` is removed, before anything is written.
    """
    stale = []
    for folder in sorted({p.parent for p in planned}):
        if not folder.is_dir():
            continue
        for f in sorted(folder.iterdir()):
            if f.is_file() and f.name.startswith(".") and f.name.endswith(".tmp"):
                f.unlink()  # a killed write of an earlier run
            elif f.is_file() and f not in planned:
                stale.append(f)
    if stale and not force:
        raise PrepareError(
            f"{len(stale)} files from an earlier run would be left next to the new ones, e.g. "
            f"{stale[0]}; pass --force to remove them (or choose an empty --out)"
        )
    for f in stale:
        f.unlink()


def write_npy(path: Path, arr: np.ndarray, force: bool) -> bool:
    """Write ``arr`` to ``path`` unless an identical file exists. Returns True when written.

    An existing file with different content is an error without ``force`` (never overwrite user data).
    """
    if path.exists():
        try:
            old = np.load(path, allow_pickle=False)
            if old.shape == arr.shape and old.dtype == arr.dtype and np.array_equal(old, arr):
                return False
        except Exception:  # noqa: BLE001 - an unreadable file differs
            pass
        if not force:
            raise PrepareError(f"{path} exists with different content; pass --force to overwrite")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    with open(tmp, "wb") as fh:
        np.save(fh, arr)
    tmp.replace(path)
    return True


def copy_file(src: Path, dst: Path, force: bool) -> bool:
    """Copy ``src`` to ``dst`` unless an identical file is there (same size and MD5)."""
    if dst.exists():
        if dst.stat().st_size == src.stat().st_size and md5sum(dst) == md5sum(src):
            return False
        if not force:
            raise PrepareError(f"{dst} exists with different content; pass --force to overwrite")
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(dst)
    shutil.copyfile(src, tmp)
    tmp.replace(dst)
    return True


def progress(items, desc: str, quiet: bool = False):
    """A tqdm progress bar over ``items`` (disabled with ``quiet``)."""
    return tqdm(items, desc=desc, disable=quiet, unit="file")
