"""Helpers shared by the data preparation scripts: checksums, safe idempotent writes, progress bars."""

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
            raise PrepareError(f"checksum mismatch for {path}: md5 {got}, expected {expected} (re-download it)")


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
    tmp = path.with_suffix(".tmp.npy")
    np.save(tmp, arr)
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
    shutil.copyfile(src, dst)
    return True


def progress(items, desc: str, quiet: bool = False):
    """A tqdm progress bar over ``items`` (disabled with ``quiet``)."""
    return tqdm(items, desc=desc, disable=quiet, unit="file")
