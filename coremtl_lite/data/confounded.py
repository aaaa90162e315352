"""ConfoundedScenes: ShadedScenes with a label-label confounder between two object tasks (MT-CRL §2.1).

Two binary classification tasks ``has_<A>`` and ``has_<B>`` ("is there a cone?", "is there a box?")
whose labels are tied by a confounder C_dist^MTL, as in MT-CRL's analysis but in rendered images:

    Y_A ~ Bernoulli(0.5),    P(Y_A = Y_B) = m_C                        (MT-CRL Table 4)

The semantic factors of a ShadedScenes scene are edited so that the labels hold: every object of
class A or B is first given another class, then object 0 becomes an A when Y_A = 1 and object 1 a
B when Y_B = 1 (a scene gets a second object when it had one only). Everything else -- positions,
sizes, the other objects, the residual factors and the renderer -- is ShadedScenes'. In training
m_C is high (default 0.9): "a box" is then a good guess for "a cone" and vice versa. In the shifted
test m_C is low (default 0.1), so a model that looks at the other task's object fails.

Task A's causal factor is the set of A objects; the B objects are the other task's factor, spurious
for A (and the other way round). :meth:`ConfoundedScenes.causal_masks_for` gives, per sample, the
pixels of the other task's objects as the non-causal region for MT-CRL's spurious score rho_spur.
The labels are functions of the semantic factors (an object hidden behind another still counts).
"""

from __future__ import annotations

from typing import Any

import torch

from coremtl_lite.data import _random
from coremtl_lite.data._common import confounded_labels
from coremtl_lite.data.scenes import CLASS_NAMES, MAX_OBJECTS, SHAPES, ShadedScenes, object_factors

DEFAULT_SHAPES = ("cone", "box")


def confounded_task_names(shapes: tuple[str, ...] | list[str]) -> list[str]:
    """``["has_<A>", "has_<B>"]``: the two tasks of a :class:`ConfoundedScenes` with these shapes."""
    shapes = tuple(shapes)
    if len(shapes) != 2 or len(set(shapes)) != 2:
        raise ValueError(f"ConfoundedScenes needs two different shapes, got {shapes}")
    bad = [s for s in shapes if s not in SHAPES]
    if bad:
        raise ValueError(f"ConfoundedScenes: unknown shapes {bad}; choose from {SHAPES}")
    return [f"has_{s}" for s in shapes]


class ConfoundedScenes(ShadedScenes):
    """ShadedScenes whose tasks ``has_<A>``, ``has_<B>`` agree with probability ``m_c`` (module docstring).

    Args:
        shapes: the two shape classes A and B (names from ``ShadedScenes``' shapes).
        m_c: the label agreement P(Y_A = Y_B) of this split.
        Others as :class:`~coremtl_lite.data.scenes.ShadedScenes` (``domain``, ``size``, ``length``,
        ``seed``, ``offset``, ``with_factors``).

    Samples carry ShadedScenes' entries (image, segmentation, depth, normal, factors) plus the two
    labels (int64 in {0, 1}).
    """

    def __init__(self, shapes: tuple[str, ...] = DEFAULT_SHAPES, m_c: float = 0.9, **kwargs: Any):
        super().__init__(**kwargs)
        self.task_names = confounded_task_names(shapes)
        if not 0.0 <= m_c <= 1.0:
            raise ValueError(f"ConfoundedScenes m_c must be in [0, 1], got {m_c}")
        self.shapes, self.m_c = tuple(shapes), float(m_c)
        self.shape_ids = [SHAPES.index(s) for s in self.shapes]  # shape index (segmentation class - 1)
        self.other_shape_ids = [c for c in range(len(SHAPES)) if c not in self.shape_ids]  # neither A nor B
        self.task_info = {t: {"kind": "classification", "num_classes": 2} for t in self.task_names}

    def sample_semantic(self, indices) -> dict[str, torch.Tensor]:
        """ShadedScenes' semantic factors, edited so that the two labels follow the confounder."""
        s = {k: v.clone() for k, v in super().sample_semantic(indices).items()}
        g = self._global_indices(indices)
        u = _random.uniform(_random.keys(self.seed, _random.stream_id("confounder"), g), 8 + MAX_OBJECTS)
        labels = confounded_labels(u[:, :2], self.m_c)  # P(Y_A = Y_B) = m_C
        # every scene gets at least two objects (object 1 is drawn like ShadedScenes draws objects)
        lone = s["num_objects"] < 2
        s["num_objects"] = torch.where(lone, 2, s["num_objects"])
        s["valid"][:, 1] = True
        extra = object_factors(u[:, 2:7], s["shape"][:, 1])
        s["position"][:, 1] = torch.where(lone[:, None], extra["position"], s["position"][:, 1])
        for k in ("size", "height", "angle"):
            s[k][:, 1] = torch.where(lone, extra[k], s[k][:, 1])
        # objects of class A or B (and the new object 1) get one of the other classes ...
        others = torch.tensor(self.other_shape_ids)
        pick = others[(u[:, 8:] * len(others)).long().clamp_max(len(others) - 1)]
        shape = s["shape"]
        taken = (shape == self.shape_ids[0]) | (shape == self.shape_ids[1]) | (shape < 0)
        shape = torch.where(taken, pick, shape)
        # ... then object 0 is an A when Y_A = 1 and object 1 a B when Y_B = 1
        shape[:, 0] = torch.where(labels[:, 0] == 1, self.shape_ids[0], shape[:, 0])
        shape[:, 1] = torch.where(labels[:, 1] == 1, self.shape_ids[1], shape[:, 1])
        s["shape"] = torch.where(s["valid"], shape, -1)
        return s

    def labels(self, semantic: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """``{has_<c>: int64 (B,)}``: whether a valid object of class c is in the scene."""
        present = semantic["valid"].bool()
        return {
            t: (present & (semantic["shape"] == c)).any(1).long()
            for t, c in zip(self.task_names, self.shape_ids)
        }

    def render(self, semantic: dict[str, torch.Tensor], residual: dict[str, torch.Tensor]) -> dict[str, Any]:
        """As :meth:`ShadedScenes.render`, plus the two labels of ``semantic``."""
        out = super().render(semantic, residual)
        out.update(self.labels(semantic))
        return out

    def toggle(self, semantic: dict[str, torch.Tensor], task: str) -> dict[str, torch.Tensor]:
        """The intervention do(Y_task := 1 - Y_task) on semantic factors from :meth:`sample_semantic`: a
        copy in which the objects of ``task``'s class get another class (neither A nor B) when the class
        is present, else the task's slot (object 0 for A, object 1 for B; the other task's object never
        sits there) takes the class. The other task's label and all other factors stay."""
        if task not in self.task_names:
            raise KeyError(f"ConfoundedScenes has tasks {self.task_names}, not {task!r}")
        slot = self.task_names.index(task)
        cls = self.shape_ids[slot]
        shape, valid = semantic["shape"], semantic["valid"].bool()
        present = (valid & (shape == cls)).any(1, keepdim=True)
        off = torch.where(shape == cls, self.other_shape_ids[0], shape)
        on = shape.clone()
        on[:, slot] = cls
        new = dict(semantic)
        new["shape"] = torch.where(valid, torch.where(present, off, on), -1)
        return new

    def causal_masks_for(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """Per-sample causal masks (B, 1, H, W) for rho_spur: for ``has_<A>`` everything except the pixels
        of the B objects (the other task's causal factor), and the other way round."""
        if "segmentation" not in batch:
            raise KeyError(f"causal_masks_for needs the batch's 'segmentation'; got keys {sorted(batch)}")
        seg = batch["segmentation"][:, None]
        cls = [CLASS_NAMES.index(s) for s in self.shapes]
        return {self.task_names[0]: seg != cls[1], self.task_names[1]: seg != cls[0]}


__all__ = ["ConfoundedScenes", "DEFAULT_SHAPES", "confounded_task_names"]
