"""The two helpers every module uses: one device choice and one seeding call."""

from __future__ import annotations

import os
import random

import numpy as np
import torch


def get_device(preference: str = "auto") -> torch.device:
    """The device to run on: ``auto`` picks CUDA, then Apple's MPS, then the CPU.

    An explicit ``cuda``/``cuda:N``/``mps``/``cpu`` is honoured, with a clear error when it is absent.
    """
    preference = (preference or "auto").lower()
    if preference == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    device = torch.device(preference)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {preference!r} was asked for, but CUDA is not available here")
    if device.type == "mps" and not (
        getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()
    ):
        raise RuntimeError(f"device {preference!r} was asked for, but MPS is not available here")
    return device


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch (all devices) and return a CPU generator seeded the same way.

    The same seed gives the same numbers on the same machine; on CUDA, cuDNN's autotuner is turned
    off so kernels are chosen deterministically.
    """
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    os.environ.setdefault("PYTHONHASHSEED", str(seed))
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
        torch.backends.cudnn.benchmark = False
    gen = torch.Generator()
    gen.manual_seed(seed)
    return gen
