"""Datasets of coremtl_lite: the synthetic benchmarks and loaders for the paper's real datasets.

Every dataset returns the sample dict of CONTRIBUTING.md and has a ``task_info``; synthetic sets
render whole batches with ``get_batch``. Start with :class:`ShadedScenes`, :func:`build_splits` and
:func:`make_loader`. Datasets are found by name in a registry (:func:`register_dataset`,
:func:`available_datasets`; :mod:`coremtl_lite.data.registry`).
"""

from coremtl_lite.data.attributes import ATTRIBUTE_NAMES, ShadedAttributes, attributes_from_semantic
from coremtl_lite.data.confounded import ConfoundedScenes
from coremtl_lite.data.corruptions import CORRUPTIONS, corrupt
from coremtl_lite.data.digits import DigitPairs
from coremtl_lite.data.loading import BatchLoader, JoinedDataset, flip_batch, make_loader
from coremtl_lite.data.real import GTA5, CelebA, Cityscapes, CityscapesC, ColoredCityscapes, NYUv2
from coremtl_lite.data.registry import (
    DatasetEntry,
    Splits,
    available_datasets,
    build_splits,
    dataset_entry,
    register_dataset,
)
from coremtl_lite.data.scenes import (
    CLASS_NAMES,
    NUM_CLASSES,
    ShadedScenes,
    lighting_sh,
    rerender_intervention,
)
from coremtl_lite.data.sem import MultiSEM

__all__ = [
    "ATTRIBUTE_NAMES",
    "BatchLoader",
    "DatasetEntry",
    "available_datasets",
    "dataset_entry",
    "register_dataset",
    "CelebA",
    "ConfoundedScenes",
    "Cityscapes",
    "CityscapesC",
    "ColoredCityscapes",
    "GTA5",
    "NYUv2",
    "DigitPairs",
    "MultiSEM",
    "ShadedAttributes",
    "attributes_from_semantic",
    "CLASS_NAMES",
    "CORRUPTIONS",
    "NUM_CLASSES",
    "ShadedScenes",
    "Splits",
    "JoinedDataset",
    "build_splits",
    "corrupt",
    "flip_batch",
    "lighting_sh",
    "make_loader",
    "rerender_intervention",
]
