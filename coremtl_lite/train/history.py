"""The metric history of a run: one record per optimisation step and one per epoch.

* ``steps``: ``{"step", "epoch", "lr", "loss/total", "loss/<task>", "loss/extra", "grad_norm", ...}``
  plus every float the objective (``logs``, e.g. ``cka``, ``rec``) and the method (e.g.
  ``weight/<task>``) report, prefixed ``obj/`` and ``method/``.
* ``epochs``: ``{"epoch", "seconds", "lr", "train/<task>", "train/total", "val": {task: {metric: v}},
  "test": {domain: {task: {metric: v}}}, "score"}``; ``val``/``test`` appear on evaluation epochs.

Everything is plain floats, ints and strings, so a history round-trips through JSON and through
``torch.load(weights_only=True)`` unchanged.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any


@dataclass
class History:
    """Per-step and per-epoch records of one training run (see the module docstring)."""

    steps: list[dict[str, Any]] = field(default_factory=list)
    epochs: list[dict[str, Any]] = field(default_factory=list)

    def step_series(self, key: str) -> tuple[list[int], list[float]]:
        """``(steps, values)`` of a per-step quantity, skipping steps that did not log it."""
        pairs = [(r["step"], r[key]) for r in self.steps if key in r]
        return [p[0] for p in pairs], [float(p[1]) for p in pairs]

    def epoch_series(self, key: str) -> tuple[list[int], list[float]]:
        """``(epochs, values)`` of a per-epoch quantity; ``key`` may be a path ``"test/target/depth/abs_err"``."""
        xs, ys = [], []
        for rec in self.epochs:
            value: Any = rec
            for part in _split_path(key, rec):
                if not isinstance(value, dict) or part not in value:
                    value = None
                    break
                value = value[part]
            if isinstance(value, (int, float)):
                xs.append(rec["epoch"])
                ys.append(float(value))
        return xs, ys

    def last(self, key: str, default: float = math.nan) -> float:
        """The latest logged value of a per-step quantity."""
        for rec in reversed(self.steps):
            if key in rec:
                return float(rec[key])
        return default

    def step_keys(self) -> list[str]:
        """Every per-step key logged so far, in first-seen order."""
        seen: dict[str, None] = {}
        for rec in self.steps:
            seen.update(dict.fromkeys(rec))
        return list(seen)

    def to_dict(self) -> dict[str, Any]:
        return {"steps": [dict(r) for r in self.steps], "epochs": [_copy(r) for r in self.epochs]}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> History:
        if not isinstance(raw, dict) or "steps" not in raw or "epochs" not in raw:
            raise ValueError("a history dict needs the keys 'steps' and 'epochs'")
        return cls(steps=[dict(r) for r in raw["steps"]], epochs=[_copy(r) for r in raw["epochs"]])

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), allow_nan=True)

    @classmethod
    def from_json(cls, text: str) -> History:
        return cls.from_dict(json.loads(text))


def _split_path(key: str, rec: dict[str, Any]) -> list[str]:
    """``"train/depth"`` is a flat key of the record; ``"val/depth/abs_err"`` a path into nested dicts."""
    if key in rec:
        return [key]
    parts = key.split("/")
    # a flat key may itself contain '/', e.g. "train/depth": try the longest flat prefix first
    for cut in range(len(parts), 0, -1):
        head = "/".join(parts[:cut])
        if head in rec:
            return [head, *parts[cut:]]
    return parts


def _copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_copy(v) for v in value]
    return value
