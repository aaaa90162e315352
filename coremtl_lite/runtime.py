"""The helpers every run uses: one device choice, one seeding call, one allocator setting and one
read-back of logged values from the device."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import random
import shutil
import sys
from typing import Any

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


def as_floats(values: dict[str, Any]) -> dict[str, Any]:
    """``values`` with its tensor entries (one number each) turned into floats all at once: one read-back
    from the device instead of one per value (each ``float(tensor)`` waits for a GPU to finish). float64
    holds every float32, bfloat16 and float16 value exactly, so the floats are those of ``float(value)``;
    other entries are kept as they are."""
    keys = [k for k, v in values.items() if isinstance(v, torch.Tensor)]
    if keys:
        read = torch.stack([values[k].detach().reshape(()).double() for k in keys]).tolist()
        values = {**values, **dict(zip(keys, read))}
    return values


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


def compile_unavailable(device: torch.device) -> str | None:
    """Why ``torch.compile`` cannot run on ``device`` here, or None when it can.

    On the CPU its default backend (inductor) writes C++ and builds it with the system's compiler, which
    a fresh machine with only Python and pip does not have: ``$CXX``, ``g++`` or ``clang++`` must be on
    the ``PATH``. Other devices bring their own code generator (Triton on CUDA).
    """
    if device.type != "cpu":
        return None
    if any(name and shutil.which(name) for name in (os.environ.get("CXX"), "g++", "clang++")):
        return None
    return "no C++ compiler ($CXX, g++ or clang++) is on the PATH, and torch.compile's CPU backend needs one"


#: glibc ``mallopt`` parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
#: blocks at least this large are still mapped for themselves and unmapped when freed (glibc's upper
#: limit for the threshold on 64-bit systems): the scene cache's chunks and other large buffers
MMAP_THRESHOLD = 32 << 20
#: freed memory at the top of the heap is given back to the system only beyond this much
TRIM_THRESHOLD = 1 << 30
_ALLOCATOR_TUNED: bool | None = None


def keep_freed_memory() -> bool:
    """Let glibc's ``malloc`` reuse freed CPU memory instead of giving it back to the system at once.

    A training step on the CPU allocates and frees the same tensors every step -- activations of a
    few megabytes, their gradients, the loss's buffers. With glibc's defaults, blocks of this size are
    mapped from the system when allocated and unmapped when freed, so every step writes to fresh pages
    and pays the kernel's page faults on each of them. A step of the cpu profile paid 1,400-5,000
    faults in a process that trains one model, and 12,000-18,000 in one that has built trainers
    before. The step was 1.09-1.44x slower for it (``benchmarks/bench_train.py`` prints the faults
    per step). Here, blocks below :data:`MMAP_THRESHOLD` (32 MiB) come from the heap, and the heap
    keeps up to :data:`TRIM_THRESHOLD` (1 GiB) of freed memory for the next step: at most about 100
    faults per step. Values are untouched (only where memory comes from changes) and the peak
    resident memory is the same, but a process holds on to up to 1 GiB it has freed until it exits.

    Process-wide and idempotent; forked children inherit it. Only on Linux with glibc; elsewhere, or
    with ``COREMTL_MALLOC_TUNING=0`` in the environment, nothing changes. Returns whether the setting
    is in force.
    """
    global _ALLOCATOR_TUNED
    if _ALLOCATOR_TUNED is None:
        _ALLOCATOR_TUNED = False
        if sys.platform.startswith("linux") and os.environ.get("COREMTL_MALLOC_TUNING", "1") != "0":
            try:
                libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            except OSError:
                return False
            if hasattr(libc, "gnu_get_libc_version"):  # glibc: its mallopt parameters
                # the threshold first: setting either one turns off glibc's own adjustment of both
                _ALLOCATOR_TUNED = bool(libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
                    libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)
                )
    return _ALLOCATOR_TUNED
