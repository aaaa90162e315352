"""Loaders for the paper's real datasets (paper §4.1-4.5), returning the sample dict of CONTRIBUTING.md.

Nothing is downloaded: the raw data comes from the official pages and is prepared by the scripts in
``data_scripts/`` (each says where to get it). On-disk layouts, one ``.npy`` per sample and key:

* NYUv2 (LibMTL / MTAN preprocessing, 288x384): ``<root>/{train,val}/{image,label,depth,normal}/<i>.npy``
  with ``image`` (H,W,3) in [0,1], ``label`` (H,W) in 0..12 or -1, ``depth`` (H,W,1), ``normal`` (H,W,3).
* Cityscapes (MTAN, 128x256): ``<root>/{train,val}/{image,label_7,depth}/<i>.npy``, 7 classes, -1 void;
  LibMTL's copy of the same data names the label folder ``label`` (both layouts load).
* GTA5 (``data_scripts/prepare_gta5.py``): the Cityscapes layout (``depth`` only if provided).
* Cityscapes-C (``data_scripts/prepare_cityscapes_c.py``): ``<root>/<corruption>/<severity>/{image,label_7,depth}``.
* Colored-Cityscapes (paper Appendix I): Cityscapes recoloured by class on the fly
  (:func:`recolor_by_class`; ``data_scripts/prepare_colored_cityscapes.py`` can write it to disk).
* CelebA: ``<root>/list_attr_celeba.txt``, ``<root>/list_eval_partition.txt`` and the aligned images in
  ``<root>/img_align_celeba/`` (or 128x128 PNGs in ``<root>/images_128/`` from ``prepare_celeba.py``).

Every sample is checked when read, and an error names the file: ``image`` finite and in [0, 1] (or
0..255, then divided by 255); ``label`` integer class ids in [0, num_classes) or -1 (void), no NaN;
``depth`` finite and >= 0 (0 = invalid); ``normal`` finite with components in [-1, 1]; no strings or
complex numbers. A folder's files must be exactly ``0.npy .. <N-1>.npy`` in every key folder (an extra
or misnamed file is reported as such, not as a missing one).

The LibMTL convention is kept: NYUv2 and Cityscapes have no separate test set, so ``val`` is the held-out
split used for both validation and test. Sibling datasets (the Cityscapes target of GTA5, Cityscapes-C)
are looked up next to ``root`` (``<root>/../cityscapes``, ``<root>/../cityscapes_c``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from coremtl_lite.data.attributes import attribute_task_info, split_attributes

NYU_CLASSES = 13
CITYSCAPES_CLASSES = 7
CITYSCAPES_CATEGORIES = ("flat", "construction", "object", "nature", "sky", "human", "vehicle")
# Cityscapes label id (0..33, also used by GTA5) -> 7-class category index (void -> -1), from the
# official cityscapesScripts label table (category ids 1..7 minus one).
CITYSCAPES_ID_TO_7 = np.array(
    [-1] * 7 + [0] * 4 + [1] * 6 + [2] * 4 + [3] * 2 + [4] + [5] * 2 + [6] * 8, dtype=np.int64
)
# Colored-Cityscapes: one fixed sRGB colour per category; the target permutes them (a derangement).
COLORED_CITYSCAPES_PALETTE = np.array(
    [
        [0.50, 0.25, 0.50],
        [0.90, 0.20, 0.15],
        [0.85, 0.80, 0.10],
        [0.15, 0.70, 0.20],
        [0.20, 0.45, 0.95],
        [0.95, 0.45, 0.80],
        [0.10, 0.80, 0.80],
    ],
    dtype=np.float32,
)
COLORED_CITYSCAPES_PERMUTATION = (3, 6, 0, 5, 1, 2, 4)


def load_npy(path: Path, expect_ndim: tuple[int, ...] | None = None) -> np.ndarray:
    """``np.load`` with errors that name the file: missing, unreadable, or of the wrong rank."""
    if not path.is_file():
        raise FileNotFoundError(f"missing data file: {path}")
    try:
        arr = np.load(path, allow_pickle=False)
    except Exception as e:  # noqa: BLE001 - any failure to parse is a corrupt file
        raise ValueError(f"corrupt data file {path}: {e}") from e
    if expect_ndim is not None and arr.ndim not in expect_ndim:
        raise ValueError(f"data file {path} has shape {arr.shape}; expected {expect_ndim} dimensions")
    return arr


#: tolerance on the documented value ranges (float32 round-off of stored arrays)
RANGE_TOL = 1e-3


def check_values(arr: np.ndarray, path: Path, key: str, num_classes: int | None = None) -> np.ndarray:
    """Check a loaded array against the documented range of its ``key``; return it as float32/int64.

    ``key`` is ``image`` ([0, 1] or 0..255), ``segmentation`` (ids in [0, num_classes) or -1),
    ``depth`` (>= 0) or ``normal`` (components in [-1, 1]). Errors name the file and what is wrong.
    """
    if arr.dtype.kind not in "iuf":
        raise ValueError(f"data file {path} holds {arr.dtype} values; {key} needs real numbers")
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        raise ValueError(f"data file {path} holds {int((~np.isfinite(arr)).sum())} NaN/inf values ({key})")
    if key == "segmentation":
        if num_classes is None:
            raise ValueError(f"check_values: {key} values of {path} need num_classes")
        if arr.dtype.kind == "f" and not np.array_equal(arr, np.rint(arr)):
            raise ValueError(f"data file {path} holds non-integer class ids (labels must be whole numbers)")
        ids = arr.astype(np.int64)
        bad = (ids < -1) | (ids >= num_classes)
        if bad.any():
            raise ValueError(
                f"data file {path} holds class ids {sorted(set(ids[bad].tolist()))[:5]} outside "
                f"[0, {num_classes}) and -1 (void)"
            )
        return ids
    arr = arr.astype(np.float32, copy=False)
    lo, hi = (float(arr.min()), float(arr.max())) if arr.size else (0.0, 0.0)
    if key == "image":
        if lo < -RANGE_TOL or hi > 255.0 + RANGE_TOL or 1.0 + RANGE_TOL < hi <= 1.5:
            raise ValueError(
                f"data file {path} holds image values in [{lo:.4g}, {hi:.4g}]; expected [0, 1] (or 0..255)"
            )
        return arr / 255.0 if hi > 1.5 else arr
    if key == "depth" and lo < 0.0:
        raise ValueError(f"data file {path} holds negative depth {lo:.4g}; depth must be >= 0 (0 = invalid)")
    if key == "normal" and max(-lo, hi) > 1.0 + RANGE_TOL:
        raise ValueError(
            f"data file {path} holds normal components in [{lo:.4g}, {hi:.4g}]; expected [-1, 1]"
        )
    return arr


def _chw(arr: np.ndarray) -> torch.Tensor:
    t = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))
    return t.permute(2, 0, 1).contiguous() if t.dim() == 3 else t[None]


class NpyFolder:
    """A split of a LibMTL/MTAN-style ``.npy`` dataset: ``<folder>/<key>/<i>.npy`` for i = 0..N-1.

    ``keys`` maps sample-dict keys to sub-folders (e.g. ``{"segmentation": "label_7"}``); the sample
    count is the number of images. ``transform(sample, index)`` may rewrite a sample (e.g. recolouring).
    """

    def __init__(self, folder: str | Path, keys: dict[str, str], task_info: dict[str, dict], transform=None):
        self.folder = Path(folder)
        if not (self.folder / "image").is_dir():
            raise FileNotFoundError(
                f"missing folder {self.folder / 'image'} (prepare the dataset with "
                f"data_scripts/; see coremtl_lite.data.real)"
            )
        for key, sub in keys.items():
            if not (self.folder / sub).is_dir():
                raise FileNotFoundError(f"missing folder {self.folder / sub} for {key!r}")
        self.keys, self.task_info, self.transform = keys, task_info, transform
        names = {p.name for p in (self.folder / "image").iterdir() if p.name.endswith(".npy")}
        self.length = len(names)
        if self.length == 0:
            raise FileNotFoundError(f"no .npy images in {self.folder / 'image'}")
        expected = {f"{i}.npy" for i in range(self.length)}
        for sub in ("image", *keys.values()):
            have = (
                names
                if sub == "image"
                else {p.name for p in (self.folder / sub).iterdir() if p.name.endswith(".npy")}
            )
            extra, missing = sorted(have - expected), sorted(expected - have, key=lambda n: int(n[:-4]))
            if extra:
                raise ValueError(
                    f"{self.folder / sub} holds files outside 0.npy..{self.length - 1}.npy: "
                    f"{', '.join(extra[:3])}{' ...' if len(extra) > 3 else ''} (an extra, misnamed or "
                    "temporary file; remove it)"
                )
            if missing:
                raise FileNotFoundError(
                    f"missing data file: {self.folder / sub / missing[0]}"
                    f"{f' (and {len(missing) - 1} more)' if len(missing) > 1 else ''}"
                )

    def __len__(self) -> int:
        return self.length

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.folder)!r}, n={self.length})"

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < self.length:
            raise IndexError(f"index {index} out of range for {self!r}")
        ipath = self.folder / "image" / f"{index}.npy"
        image = load_npy(ipath, (3,))
        if image.shape[-1] != 3:
            raise ValueError(f"data file {ipath} is not (H, W, 3): {image.shape}")
        image = check_values(image, ipath, "image")  # 0..255 is divided by 255
        out: dict[str, Any] = {"image": _chw(image).clamp(0.0, 1.0)}
        hw = image.shape[:2]
        for key, sub in self.keys.items():
            path = self.folder / sub / f"{index}.npy"
            arr = load_npy(path, (2, 3))
            if arr.shape[:2] != hw:
                raise ValueError(f"data file {path} has shape {arr.shape}, the image is {hw}")
            if key in ("segmentation", "depth") and arr.size != hw[0] * hw[1]:
                raise ValueError(
                    f"data file {path} has shape {arr.shape}; {key} needs one value per pixel {hw}"
                )
            if key == "normal" and arr.shape != (*hw, 3):
                raise ValueError(f"data file {path} has shape {arr.shape}; normal needs {(*hw, 3)}")
            arr = check_values(arr, path, key, self.task_info.get(key, {}).get("num_classes"))
            if key == "segmentation":
                out[key] = torch.from_numpy(arr.reshape(hw))
            elif key == "depth":
                out[key] = _chw(arr.reshape(*hw, 1))
            elif key == "normal":
                n = _chw(arr)
                norm = n.norm(dim=0, keepdim=True)
                out[key] = torch.where(norm > 1e-6, n / norm.clamp_min(1e-6), torch.zeros_like(n))
        if self.transform is not None:
            out = self.transform(out, index)
        return out


def NYUv2(root: str | Path, split: str = "train") -> NpyFolder:  # noqa: N802 - a dataset "class"
    """NYUv2 in the LibMTL/MTAN layout: 13-class segmentation, depth and normals at 288x384."""
    return NpyFolder(
        Path(root) / _split(split),
        {"segmentation": "label", "depth": "depth", "normal": "normal"},
        {
            "segmentation": {"kind": "segmentation", "num_classes": NYU_CLASSES},
            "depth": {"kind": "depth"},
            "normal": {"kind": "normal"},
        },
    )


def label_folder(folder: Path) -> str:
    """The 7-class label folder of a Cityscapes-layout split: ``label_7`` (MTAN) or ``label`` (LibMTL)."""
    return "label" if not (folder / "label_7").is_dir() and (folder / "label").is_dir() else "label_7"


def Cityscapes(root: str | Path, split: str = "train", transform=None) -> NpyFolder:  # noqa: N802
    """Cityscapes in the MTAN layout (``label_7/``) or LibMTL's (``label/``): 7-class segmentation and
    depth at 128x256."""
    folder = Path(root) / _split(split)
    return NpyFolder(
        folder, {"segmentation": label_folder(folder), "depth": "depth"}, _cityscapes_info(), transform
    )


def GTA5(root: str | Path, split: str = "train") -> NpyFolder:  # noqa: N802
    """GTA5 prepared by ``data_scripts/prepare_gta5.py``: 7 Cityscapes categories (+ depth if provided)."""
    folder = Path(root) / _split(split)
    keys = {"segmentation": label_folder(folder)}
    info = {"segmentation": _cityscapes_info()["segmentation"]}
    if (folder / "depth").is_dir():
        keys["depth"], info["depth"] = "depth", {"kind": "depth"}
    return NpyFolder(folder, keys, info)


def CityscapesC(root: str | Path, corruption: str, severity: int) -> NpyFolder:  # noqa: N802
    """Cityscapes-C: Cityscapes val under one of four corruptions at severity 1-5 (prepare_cityscapes_c.py)."""
    folder = Path(root) / corruption / str(int(severity))
    return NpyFolder(folder, {"segmentation": label_folder(folder), "depth": "depth"}, _cityscapes_info())


def recolor_by_class(image: torch.Tensor, segmentation: torch.Tensor, permuted: bool = False) -> torch.Tensor:
    """Colored-Cityscapes (paper Appendix I): tint every labelled pixel with its class colour.

    ``out = 0.6 * colour[class] + 0.4 * luminance`` keeps the scene's shading while making colour a
    deterministic class cue; void pixels keep their colour. ``permuted`` applies the target's colour
    permutation. (The paper does not give the recolouring formula; this is ours.)
    """
    palette = torch.from_numpy(COLORED_CITYSCAPES_PALETTE)
    if permuted:
        palette = palette[list(COLORED_CITYSCAPES_PERMUTATION)]
    lum = (0.299 * image[0] + 0.587 * image[1] + 0.114 * image[2])[None]
    seg = segmentation.clamp(0, len(palette) - 1)
    colour = palette[seg].permute(2, 0, 1)
    out = 0.6 * colour + 0.4 * lum
    return torch.where((segmentation >= 0)[None], out, image).clamp(0.0, 1.0)


def ColoredCityscapes(root: str | Path, split: str = "train", permuted: bool = False) -> NpyFolder:  # noqa: N802
    """Cityscapes recoloured by class (source: fixed colours; ``permuted``: the target's permutation)."""

    def transform(sample: dict[str, Any], index: int) -> dict[str, Any]:
        sample["image"] = recolor_by_class(sample["image"], sample["segmentation"], permuted)
        return sample

    return Cityscapes(root, split, transform)


class CelebA:
    """CelebA attributes (official files): the first ``num_attributes`` of the 40, images at ``size``.

    Args:
        root: folder with ``list_attr_celeba.txt``, ``list_eval_partition.txt`` and ``images_128/``
            (PNG, from ``prepare_celeba.py``) or ``img_align_celeba/`` (the official JPEGs).
        split: ``train`` / ``val`` / ``test`` (official partition 0 / 1 / 2).
        num_attributes: how many attributes, in the file's order (paper Table 4: 10, 20, 30, 40).
        size: square image side; aligned 178x218 images are centre-cropped to 178x178 then resized.
    """

    def __init__(self, root: str | Path, split: str = "train", num_attributes: int = 40, size: int = 128):
        self.root, self.size = Path(root), int(size)
        if split not in ("train", "val", "test"):
            raise ValueError(f"CelebA split must be train, val or test, got {split!r}")
        if not 1 <= num_attributes <= 40:
            raise ValueError(f"CelebA has 40 attributes; num_attributes={num_attributes}")
        names, rows = read_celeba_attributes(self.root / "list_attr_celeba.txt")
        parts = read_celeba_partition(self.root / "list_eval_partition.txt")
        want = {"train": 0, "val": 1, "test": 2}[split]
        self.files = [f for f in rows if parts.get(f) == want]
        missing = [f for f in rows if f not in parts]
        if missing:
            raise ValueError(
                f"{self.root / 'list_eval_partition.txt'} lacks {len(missing)} images, e.g. {missing[0]}"
            )
        self.attributes = torch.tensor(
            np.stack([rows[f][:num_attributes] for f in self.files])
            if self.files
            else np.zeros((0, num_attributes)),
            dtype=torch.float32,
        )
        self.attribute_names = names[:num_attributes]
        self.task_info = attribute_task_info(num_attributes)
        self.image_dir = (
            self.root / "images_128"
            if (self.root / "images_128").is_dir()
            else self.root / "img_align_celeba"
        )
        if not self.image_dir.is_dir():
            raise FileNotFoundError(f"missing image folder {self.root / 'img_align_celeba'} (or images_128/)")

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> dict[str, Any]:
        name = self.files[index]
        path = self.image_dir / (Path(name).stem + ".png" if self.image_dir.name == "images_128" else name)
        return split_attributes(
            {"image": load_celeba_image(path, self.size), "attributes": self.attributes[index]}
        )


def load_celeba_image(path: Path, size: int) -> torch.Tensor:
    """An aligned CelebA image, centre-cropped to a square and resized to ``size`` (float (3,size,size))."""
    from PIL import Image

    if not path.is_file():
        raise FileNotFoundError(f"missing image file: {path}")
    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
            w, h = im.size
            s = min(w, h)
            im = im.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s))
            if im.size != (size, size):
                im = im.resize((size, size), Image.Resampling.BILINEAR)
            arr = np.asarray(im, dtype=np.float32) / 255.0
    except OSError as e:
        raise ValueError(f"corrupt image file {path}: {e}") from e
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous()


def read_celeba_attributes(path: Path) -> tuple[tuple[str, ...], dict[str, np.ndarray]]:
    """Parse ``list_attr_celeba.txt``: a count line, 40 names, then ``file +-1 x 40``; returns {0, 1} rows."""
    if not path.is_file():
        raise FileNotFoundError(f"missing attribute file: {path}")
    lines = path.read_text().splitlines()
    try:
        count = int(lines[0].strip())
        names = tuple(lines[1].split())
        rows = {}
        for line in lines[2 : 2 + count]:
            parts = line.split()
            vals = np.array([int(v) for v in parts[1:]], dtype=np.float32)
            if len(vals) != len(names):
                raise ValueError(f"line for {parts[0]} has {len(vals)} values, expected {len(names)}")
            if not np.isin(vals, (-1.0, 1.0)).all():
                raise ValueError(
                    f"line for {parts[0]} holds values other than 1 and -1: "
                    f"{sorted(set(vals.tolist()) - {-1.0, 1.0})}"
                )
            rows[parts[0]] = (vals > 0).astype(np.float32)
    except (ValueError, IndexError) as e:
        raise ValueError(f"corrupt attribute file {path}: {e}") from e
    if len(rows) != count:
        raise ValueError(f"corrupt attribute file {path}: header says {count} images, found {len(rows)}")
    return names, rows


def read_celeba_partition(path: Path) -> dict[str, int]:
    """Parse ``list_eval_partition.txt`` (``file 0|1|2`` per line)."""
    if not path.is_file():
        raise FileNotFoundError(f"missing partition file: {path}")
    out = {}
    for i, line in enumerate(path.read_text().splitlines()):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2 or parts[1] not in ("0", "1", "2"):
            raise ValueError(f"corrupt partition file {path}, line {i + 1}: {line!r}")
        out[parts[0]] = int(parts[1])
    return out


def _split(split: str) -> str:
    if split in ("train", "val"):
        return split
    if split == "test":
        return "val"  # LibMTL: the preprocessed NYUv2/Cityscapes have train and val only
    raise ValueError(f"split must be train, val or test, got {split!r}")


def _cityscapes_info() -> dict[str, dict]:
    return {
        "segmentation": {"kind": "segmentation", "num_classes": CITYSCAPES_CLASSES},
        "depth": {"kind": "depth"},
    }
