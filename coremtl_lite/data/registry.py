"""The dataset registry: ``data.dataset`` names a builder of train/val/test splits.

Every dataset is registered once, by name, with :func:`register_dataset` -- as every multi-task method
is with :func:`coremtl_lite.methods.register` -- and :func:`build_splits` looks the name up; nothing
else in the package lists dataset names. A builder takes the :class:`~coremtl_lite.config.DataConfig`
and the seed and returns :class:`Splits`. An unknown name is refused with the nearest registered one.

Synthetic sets (``synthetic=True``) are generated from the seed: train, val and test use disjoint index
ranges of the same generator (offsets 0, train_size, train_size + val_size), and ``test`` holds one
dataset per name in ``data.eval_domains``. Real sets read the prepared folder ``data.root``
(``data_scripts/``).

To add a dataset: write its class (the sample dict and ``task_info`` of CONTRIBUTING.md), then a
builder here decorated with ``@register_dataset("name", synthetic=...)``.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from coremtl_lite.config import DataConfig
from coremtl_lite.data.loading import JoinedDataset

__all__ = [
    "DatasetEntry",
    "Splits",
    "available_datasets",
    "build_splits",
    "dataset_entry",
    "register_dataset",
]


@dataclass
class Splits:
    """Training, validation and per-domain test datasets."""

    train: Any
    val: Any
    test: dict[str, Any]


SplitBuilder = Callable[[DataConfig, int], Splits]


@dataclass(frozen=True)
class DatasetEntry:
    """A registered dataset: its name, its split builder and whether it is generated from the seed."""

    name: str
    build: SplitBuilder
    synthetic: bool


_REGISTRY: dict[str, DatasetEntry] = {}


def register_dataset(name: str, *, synthetic: bool) -> Callable[[SplitBuilder], SplitBuilder]:
    """Function decorator: make ``builder(data_cfg, seed) -> Splits`` the builder of ``data.dataset=name``."""

    def deco(builder: SplitBuilder) -> SplitBuilder:
        if name in _REGISTRY:
            raise ValueError(f"dataset {name!r} is registered twice")
        _REGISTRY[name] = DatasetEntry(name, builder, synthetic)
        return builder

    return deco


def available_datasets(synthetic: bool | None = None) -> list[str]:
    """The registered names in registration order (only the synthetic or only the real ones if asked)."""
    return [n for n, e in _REGISTRY.items() if synthetic is None or e.synthetic == synthetic]


def dataset_entry(name: str) -> DatasetEntry:
    """The registry entry of ``name``; a ValueError naming the nearest registered name when it is unknown."""
    if name not in _REGISTRY:
        near = difflib.get_close_matches(str(name), list(_REGISTRY), n=1)
        hint = f" (did you mean {near[0]!r}?)" if near else ""
        raise ValueError(
            f"unknown data.dataset {name!r}{hint}; choose one of {', '.join(available_datasets())}"
        )
    return _REGISTRY[name]


def build_splits(data_cfg: DataConfig, seed: int) -> Splits:
    """``Splits(train, val, test)`` of the dataset ``data_cfg.dataset`` (module doc).

    The label-label confounder sets (``multisem``, ``confounded_scenes``) use ``data.m_train`` in training
    and the ``source`` test, ``data.m_val`` in validation and ``data.m_test`` in the ``target`` test.
    ``data.train_on_val`` joins the validation split to the training set (:class:`JoinedDataset`; MT-CRL's
    protocol for the methods that do not use it as an environment, its §4).
    """
    splits = dataset_entry(data_cfg.dataset).build(data_cfg, seed)
    if data_cfg.train_on_val:
        splits = Splits(JoinedDataset(splits.train, splits.val), splits.val, splits.test)
    return splits


def _by_offset(data_cfg: DataConfig, make: Callable[[str, int, int], Any]) -> Splits:
    """Splits of a generator indexed by offset: ``make(domain, length, offset)``."""
    n_tr, n_va, n_te = data_cfg.train_size, data_cfg.val_size, data_cfg.test_size
    return Splits(
        make(data_cfg.source_domain, n_tr, 0),
        make(data_cfg.source_domain, n_va, n_tr),
        {d: make(d, n_te, n_tr + n_va) for d in data_cfg.eval_domains},
    )


# -------------------------------------------------------------------------------------- synthetic sets


@register_dataset("shaded_scenes", synthetic=True)
def _shaded_scenes(data_cfg: DataConfig, seed: int) -> Splits:
    from coremtl_lite.data.scenes import ShadedScenes

    return _by_offset(
        data_cfg,
        lambda domain, length, offset: ShadedScenes(
            domain=domain,
            size=data_cfg.image_size,
            length=length,
            seed=seed,
            offset=offset,
            rho=data_cfg.rho,
            severity=data_cfg.severity,
        ),
    )


@register_dataset("shaded_attributes", synthetic=True)
def _shaded_attributes(data_cfg: DataConfig, seed: int) -> Splits:
    from coremtl_lite.data.attributes import ShadedAttributes

    return _by_offset(
        data_cfg,
        lambda domain, length, offset: ShadedAttributes(
            n_attributes=data_cfg.num_attributes,
            domain=domain,
            size=data_cfg.image_size,
            length=length,
            seed=seed,
            offset=offset,
            rho=data_cfg.rho,
            severity=data_cfg.severity,
        ),
    )


@register_dataset("confounded_scenes", synthetic=True)
def _confounded_scenes(data_cfg: DataConfig, seed: int) -> Splits:
    from coremtl_lite.data.confounded import ConfoundedScenes

    n_tr, n_va, n_te = data_cfg.train_size, data_cfg.val_size, data_cfg.test_size

    def cs(m_c: float, length: int, offset: int) -> ConfoundedScenes:
        return ConfoundedScenes(
            shapes=data_cfg.confounded_shapes,
            m_c=m_c,
            domain=data_cfg.source_domain,
            size=data_cfg.image_size,
            length=length,
            seed=seed,
            offset=offset,
        )

    m_test = {"source": data_cfg.m_train, "target": data_cfg.m_test}
    bad = [d for d in data_cfg.eval_domains if d not in m_test]
    if bad:
        raise ValueError(
            f"confounded_scenes has the evaluation domains source (m_train) and target (m_test), not {bad}"
        )
    return Splits(
        cs(data_cfg.m_train, n_tr, 0),
        cs(data_cfg.m_val, n_va, n_tr),
        {d: cs(m_test[d], n_te, n_tr + n_va) for d in data_cfg.eval_domains},
    )


@register_dataset("digit_pairs", synthetic=True)
def _digit_pairs(data_cfg: DataConfig, seed: int) -> Splits:
    from coremtl_lite.data.digits import DigitPairs

    lengths = {"train": data_cfg.train_size, "val": data_cfg.val_size}

    def dp(split: str) -> DigitPairs:
        return DigitPairs(
            split=split, size=data_cfg.image_size, seed=seed, length=lengths.get(split, data_cfg.test_size)
        )

    return Splits(dp("train"), dp("val"), {d: dp(DigitPairs.domain_split(d)) for d in data_cfg.eval_domains})


@register_dataset("multisem", synthetic=True)
def _multisem(data_cfg: DataConfig, seed: int) -> Splits:
    from coremtl_lite.data.sem import MultiSEM

    def ms(split: str, length: int) -> MultiSEM:
        return MultiSEM(
            split=split,
            length=length,
            seed=seed,
            num_tasks=data_cfg.num_tasks,
            m_train=data_cfg.m_train,
            m_val=data_cfg.m_val,
            m_test=data_cfg.m_test,
        )

    return Splits(
        ms("train", data_cfg.train_size),
        ms("val", data_cfg.val_size),
        {d: ms(MultiSEM.domain_split(d), data_cfg.test_size) for d in data_cfg.eval_domains},
    )


# ------------------------------------------------------------------------------------------- real sets
# Evaluation domains: ``source`` (the dataset's held-out split); for ``gta5`` also ``target`` (Cityscapes
# val at ``<root>/../cityscapes``); for ``cityscapes`` also ``corrupt:<name>:<severity>``
# (``<root>/../cityscapes_c``); for ``colored_cityscapes`` ``colored`` and ``colored-permuted``.


def _root(data_cfg: DataConfig) -> Path:
    if not data_cfg.root:
        raise ValueError(f"data.root must name the prepared {data_cfg.dataset} folder (see data_scripts/)")
    return Path(data_cfg.root)


def _check_domain(domain: str, allowed: tuple[str, ...], name: str) -> str:
    if domain not in allowed:
        raise ValueError(f"dataset {name!r} has no evaluation domain {domain!r}; use one of {allowed}")
    return domain


@register_dataset("nyuv2", synthetic=False)
def _nyuv2(data_cfg: DataConfig, seed: int) -> Splits:
    from coremtl_lite.data.real import NYUv2

    root = _root(data_cfg)
    return Splits(
        NYUv2(root, "train"),
        NYUv2(root, "val"),
        {_check_domain(d, ("source",), "nyuv2"): NYUv2(root, "val") for d in data_cfg.eval_domains},
    )


@register_dataset("cityscapes", synthetic=False)
def _cityscapes(data_cfg: DataConfig, seed: int) -> Splits:
    from coremtl_lite.data.real import Cityscapes, CityscapesC

    root = _root(data_cfg)
    tests: dict[str, Any] = {}
    for d in data_cfg.eval_domains:
        if d.startswith("corrupt:"):
            parts = d.split(":")
            if len(parts) != 3 or not parts[2].isdigit():
                raise ValueError(
                    f"evaluation domain {d!r} must read corrupt:<corruption>:<severity 1-5>, e.g. "
                    "corrupt:fog:3"
                )
            _, corr, sev = parts
            tests[d] = CityscapesC(root.parent / "cityscapes_c", corr, int(sev))
        else:
            tests[_check_domain(d, ("source",), "cityscapes")] = Cityscapes(root, "val")
    return Splits(Cityscapes(root, "train"), Cityscapes(root, "val"), tests)


@register_dataset("gta5", synthetic=False)
def _gta5(data_cfg: DataConfig, seed: int) -> Splits:
    from coremtl_lite.data.real import GTA5, Cityscapes

    root = _root(data_cfg)
    tests: dict[str, Any] = {}
    for d in data_cfg.eval_domains:
        _check_domain(d, ("source", "target"), "gta5")
        tests[d] = GTA5(root, "val") if d == "source" else Cityscapes(root.parent / "cityscapes", "val")
    return Splits(GTA5(root, "train"), GTA5(root, "val"), tests)


@register_dataset("colored_cityscapes", synthetic=False)
def _colored_cityscapes(data_cfg: DataConfig, seed: int) -> Splits:
    from coremtl_lite.data.real import ColoredCityscapes

    root = _root(data_cfg)
    tests: dict[str, Any] = {}
    for d in data_cfg.eval_domains:
        _check_domain(d, ("source", "colored", "colored-permuted", "target"), "colored_cityscapes")
        tests[d] = ColoredCityscapes(root, "val", permuted=d in ("colored-permuted", "target"))
    return Splits(ColoredCityscapes(root, "train"), ColoredCityscapes(root, "val"), tests)


@register_dataset("celeba", synthetic=False)
def _celeba(data_cfg: DataConfig, seed: int) -> Splits:
    from coremtl_lite.data.real import CelebA

    root, n = _root(data_cfg), data_cfg.num_attributes
    return Splits(
        CelebA(root, "train", n),
        CelebA(root, "val", n),
        {_check_domain(d, ("source",), "celeba"): CelebA(root, "test", n) for d in data_cfg.eval_domains},
    )
