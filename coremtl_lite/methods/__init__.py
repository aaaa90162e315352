"""Multi-task methods, one per file, all behind one registry (see :mod:`coremtl_lite.methods.base`)."""

from coremtl_lite.methods.base import (
    Aggregator,
    EqualWeighting,
    Method,
    Weighting,
    available,
    build_method,
    register,
)

__all__ = ["Aggregator", "EqualWeighting", "Method", "Weighting", "available", "build_method", "register"]
