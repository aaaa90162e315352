"""Counter-based random numbers: deterministic per (seed, stream, index), vectorised over a batch.

A synthetic sample must be the same whichever batch it is rendered in, so every random number is a
pure function of ``(seed, stream, index, slot)``: an integer hash (Wellons' *lowbias32*) mixes the
four keys into 32 uniform bits. No generator state is shared between samples.
"""

from __future__ import annotations

import math
import zlib

import torch

_MASK = 0xFFFFFFFF


def _mul32(x: torch.Tensor, c: int) -> torch.Tensor:
    """``(x * c) mod 2**32`` for int64 ``x`` in [0, 2**32) without signed overflow."""
    lo = (x * (c & 0xFFFF)) & _MASK
    hi = ((x * (c >> 16)) & 0xFFFF) << 16
    return (lo + hi) & _MASK


def hash32(x: torch.Tensor) -> torch.Tensor:
    """The lowbias32 integer hash of int64 values in [0, 2**32) (a bijection on 32-bit words)."""
    x = x & _MASK
    x = x ^ (x >> 16)
    x = _mul32(x, 0x7FEB352D)
    x = x ^ (x >> 15)
    x = _mul32(x, 0x846CA68B)
    return x ^ (x >> 16)


def stream_id(name: str) -> int:
    """A stable 32-bit id for a named random stream (CRC-32 of the name)."""
    return zlib.crc32(name.encode("utf-8")) & _MASK


def keys(seed: int, stream: int, indices: torch.Tensor) -> torch.Tensor:
    """Per-sample 32-bit keys mixing the seed, the stream and the (int64) sample indices."""
    idx = torch.as_tensor(indices, dtype=torch.int64)
    base = hash32(torch.tensor(int(seed) & _MASK, dtype=torch.int64) ^ hash32(torch.tensor(stream)))
    return hash32(base ^ hash32(idx & _MASK) ^ hash32((idx >> 32) + 0x9E3779B9))


def uniform(key: torch.Tensor, n: int) -> torch.Tensor:
    """``(B, n)`` float32 uniforms in (0, 1), slot ``j`` of sample ``b`` a function of ``key[b]`` and ``j``."""
    slots = torch.arange(n, dtype=torch.int64)
    bits = hash32(key[:, None] ^ hash32(slots[None, :] * 0x68E31DA4 + 0x1B56C4E9))
    return ((bits.double() + 0.5) / 4294967296.0).float()


def normal(key: torch.Tensor, n: int) -> torch.Tensor:
    """``(B, n)`` standard normals by the Box-Muller transform of :func:`uniform` pairs."""
    u = uniform(key, 2 * n)
    u1, u2 = u[:, :n], u[:, n:]
    return torch.sqrt(-2.0 * torch.log(u1)) * torch.cos(2.0 * math.pi * u2)
