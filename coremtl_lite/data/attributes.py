"""ShadedAttributes: ShadedScenes labelled with N binary attributes (the CelebA analogue, paper Table 4).

Every attribute is a fixed function of the semantic factors ``s`` (so it is invariant to any
intervention on the residual factors), e.g. "a cone is present", "a box lies in the left half",
"a torus is large", "at least 3 objects". The list :data:`ATTRIBUTE_NAMES` is ordered so that the
first N attributes mix kinds and classes for every N; ``n_attributes`` picks the first N (up to 42).
"""

from __future__ import annotations

from typing import Any

import torch

from coremtl_lite.data.scenes import SHAPES, ShadedScenes
from coremtl_lite.data.scenes.geometry import SHAPE_HEIGHT_RANGES, SHAPE_SIZE_RANGES

# an object is "large" ("tall") when its size (height) exceeds the median of its class's range: every class
# has its own proportions, so one threshold for all would make some attributes constant
LARGE_SIZE = tuple(sum(r) / 2 for r in SHAPE_SIZE_RANGES)
TALL_HEIGHT = tuple(sum(r) / 2 for r in SHAPE_HEIGHT_RANGES)


def _attribute_table() -> list[tuple[str, str, int]]:
    """(name, kind, argument) for every attribute, in the order used to take the first N."""
    table: list[tuple[str, str, int]] = [(f"has_{s}", "present", c) for c, s in enumerate(SHAPES)]
    table += [(f"at_least_{k}_objects", "count_ge", k) for k in (2, 3, 4)] + [("five_objects", "count_ge", 5)]
    for kind, word in (
        ("left", "left"),
        ("top", "top"),
        ("large", "large"),
        ("tall", "tall"),
        ("multiple", "two_or_more"),
    ):
        table += [(f"{s}_{word}", kind, c) for c, s in enumerate(SHAPES)]
    table += [("ground_slopes_up_right", "tilt_x", 0), ("ground_slopes_up_top", "tilt_y", 0)]
    return table


ATTRIBUTES = _attribute_table()
ATTRIBUTE_NAMES = tuple(name for name, _, _ in ATTRIBUTES)
MAX_ATTRIBUTES = len(ATTRIBUTES)


def attributes_from_semantic(
    semantic: dict[str, torch.Tensor], n_attributes: int = MAX_ATTRIBUTES
) -> torch.Tensor:
    """The first ``n_attributes`` binary attributes ``(B, n)`` (float32 in {0, 1}) of semantic factors.

    Definitions (over valid objects; x to the right, y up): ``has_<c>``: some object of class c;
    ``at_least_k_objects``; ``<c>_left``: an object of class c with centre x < 0; ``<c>_top``: centre
    y > 0; ``<c>_large``: size > :data:`LARGE_SIZE` of c; ``<c>_tall``: height > :data:`TALL_HEIGHT` of c;
    ``<c>_two_or_more``: at least two objects of class c; ``ground_slopes_up_*``: positive ground slope.
    """
    if not 1 <= n_attributes <= MAX_ATTRIBUTES:
        raise ValueError(f"n_attributes must be in 1..{MAX_ATTRIBUTES}, got {n_attributes}")
    valid = semantic["valid"].bool()
    shape = semantic["shape"].long()
    pos, size, height = semantic["position"], semantic["size"], semantic["height"]
    num = valid.sum(1)
    cols = []
    for _, kind, arg in ATTRIBUTES[:n_attributes]:
        of_class = valid & (shape == arg)
        if kind == "present":
            col = of_class.any(1)
        elif kind == "count_ge":
            col = num >= arg
        elif kind == "left":
            col = (of_class & (pos[..., 0] < 0)).any(1)
        elif kind == "top":
            col = (of_class & (pos[..., 1] > 0)).any(1)
        elif kind == "large":
            col = (of_class & (size > LARGE_SIZE[arg])).any(1)
        elif kind == "tall":
            col = (of_class & (height > TALL_HEIGHT[arg])).any(1)
        elif kind == "multiple":
            col = of_class.sum(1) >= 2
        elif kind == "tilt_x":
            col = semantic["ground_tilt"][:, 0] > 0
        else:  # tilt_y
            col = semantic["ground_tilt"][:, 1] > 0
        cols.append(col)
    return torch.stack(cols, 1).float()


def attribute_task_names(n_attributes: int) -> list[str]:
    """Names of the one-attribute tasks ``attr_00``, ``attr_01``, ...: each attribute as its own task,
    as in the paper's scalability study (Table 4: 10/20/30/40 CelebA attributes = 10/20/30/40 tasks)."""
    return [f"attr_{i:02d}" for i in range(n_attributes)]


def attribute_task_info(n_attributes: int) -> dict[str, dict[str, Any]]:
    """``task_info`` offering all attributes as one task (``attributes``) and each as its own task."""
    info: dict[str, dict[str, Any]] = {"attributes": {"kind": "attributes", "num_attributes": n_attributes}}
    info.update(
        {name: {"kind": "attributes", "num_attributes": 1} for name in attribute_task_names(n_attributes)}
    )
    return info


def split_attributes(sample: dict[str, Any]) -> dict[str, Any]:
    """Add the one-attribute targets ``attr_XX`` (shape ``(..., 1)``) next to ``attributes`` (``(..., N)``)."""
    attrs = sample["attributes"]
    for i, name in enumerate(attribute_task_names(attrs.shape[-1])):
        sample[name] = attrs[..., i : i + 1]
    return sample


class ShadedAttributes(ShadedScenes):
    """ShadedScenes whose task is ``attributes``: N binary labels from the semantic factors.

    Args:
        n_attributes: how many attributes (the first N of :data:`ATTRIBUTE_NAMES`, 1..42).
        Others as :class:`~coremtl_lite.data.scenes.ShadedScenes` (``domain``, ``size``, ``length``,
        ``seed``, ``offset``, ``with_factors``).

    Samples carry everything ShadedScenes returns plus ``attributes`` (float32 ``(N,)``) and, for the
    scalability study, each attribute as its own task ``attr_XX`` (float32 ``(1,)``).
    """

    def __init__(self, n_attributes: int = 10, **kwargs: Any):
        super().__init__(**kwargs)
        if not 1 <= n_attributes <= MAX_ATTRIBUTES:
            raise ValueError(f"n_attributes must be in 1..{MAX_ATTRIBUTES}, got {n_attributes}")
        self.n_attributes = n_attributes
        self.attribute_names = ATTRIBUTE_NAMES[:n_attributes]
        self.task_info = attribute_task_info(n_attributes)

    def render(self, semantic: dict[str, torch.Tensor], residual: dict[str, torch.Tensor]) -> dict[str, Any]:
        """As :meth:`ShadedScenes.render`, plus the ``attributes`` labels of ``semantic`` (all together,
        and one per task as ``attr_XX``)."""
        out = super().render(semantic, residual)
        out["attributes"] = attributes_from_semantic(semantic, self.n_attributes)
        return split_attributes(out)


__all__ = [
    "ATTRIBUTE_NAMES",
    "MAX_ATTRIBUTES",
    "ShadedAttributes",
    "attribute_task_info",
    "attribute_task_names",
    "attributes_from_semantic",
    "split_attributes",
]
