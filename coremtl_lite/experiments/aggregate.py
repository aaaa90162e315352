"""Aggregation over seeds: the mean and the sample standard deviation, of one list or of rows of numbers."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

__all__ = ["format_mean_std", "mean_rows", "mean_std"]


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """``(mean, sample standard deviation)`` of ``values`` (the n - 1 estimator; 0 for one value)."""
    n = len(values)
    if n == 0:
        raise ValueError("mean_std needs at least one value")
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    return mean, std


def format_mean_std(mean: float, std: float, n: int, digits: int = 4) -> str:
    """A cell ``"mean ± std"`` (``digits`` significant digits, two for the std); one value has no spread
    to show, so it reads ``"mean (1 seed)"`` rather than a misleading ``± 0``."""
    if n == 1:
        return f"{mean:.{digits}g} (1 seed)"
    return f"{mean:.{digits}g} ± {std:.2g}"


def mean_rows(rows: Sequence[Mapping[str, float]], with_std: bool = False) -> dict[str, float]:
    """The mean of each key over ``rows`` (the keys every row has, in the first row's order); with
    ``with_std`` also ``<key>_std``, the sample standard deviation over the rows (:func:`mean_std`)."""
    if not rows:
        raise ValueError("mean_rows needs at least one row")
    keys = [k for k in rows[0] if all(k in r for r in rows)]
    stats = {k: mean_std([r[k] for r in rows]) for k in keys}
    out = {k: m for k, (m, _) in stats.items()}
    if with_std:
        out.update({f"{k}_std": s for k, (_, s) in stats.items()})
    return out
