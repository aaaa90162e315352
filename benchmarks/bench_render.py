"""Rendering throughput of ShadedScenes, with the goal beside each figure.

    .venv/bin/python benchmarks/bench_render.py [--threads 2] [--batch 256] [--repeats 5]

Prints scenes/s for whole-batch rendering (``get_batch``: factor sampling + geometry + shading +
sensor noise + corruption) per image size and domain; the best of ``--repeats`` timed batches after
one warm-up; then the rate at which the render-once cache fills (fixed 64-scene chunks, one at a
time and side by side), which is what the training loop waits for. Goals at 64x64 on 2 CPU cores
(issue 15): >= 5,000 scenes/s for the clean domains, >= 2,000 with a corruption; other sizes have none.

Beside each wall-clock figure it prints the scenes per CPU-second of the process (all threads):
on a machine that other jobs share, the wall-clock figure measures the contention as much as the
renderer, the CPU figure much less so. Run on a quiet machine to compare with the goals.

It renders as the trainer does, with freed memory kept for the next batch
(:func:`coremtl_lite.runtime.keep_freed_memory`); ``COREMTL_MALLOC_TUNING=0`` measures glibc's
defaults instead.
"""

from __future__ import annotations

import argparse
import time

import torch

from coremtl_lite.data import ShadedScenes
from coremtl_lite.data.cache import RENDER_THREADS, CachedDataset
from coremtl_lite.runtime import keep_freed_memory


def scenes_per_second(size: int, domain: str, batch: int, repeats: int) -> tuple[float, float]:
    """Scenes per wall-clock second and per CPU-second (each the best of ``repeats`` batches)."""
    ds = ShadedScenes(domain=domain, size=size, length=batch * (repeats + 1), seed=0)
    ds.get_batch(range(batch))  # warm-up (noise bank, allocator)
    wall = cpu = float("inf")
    for r in range(1, repeats + 1):
        t0, c0 = time.perf_counter(), time.process_time()
        ds.get_batch(range(r * batch, (r + 1) * batch))
        wall, cpu = min(wall, time.perf_counter() - t0), min(cpu, time.process_time() - c0)
    return batch / wall, batch / max(cpu, 1e-9)


def cache_fill_per_second(
    size: int, domain: str, scenes: int, threads: tuple[int, ...], repeats: int
) -> list[float]:
    """Scenes per second of filling the render-once cache (what the training loop waits for): 64-scene
    chunks, ``t`` of them at a time for each ``t`` of ``threads``; the best of ``repeats`` fills, the
    settings taking turns so that the machine's noise falls on all of them."""
    ds = ShadedScenes(domain=domain, size=size, length=scenes, seed=0)
    ds.get_batch(range(CachedDataset.chunk))  # warm-up
    best = [0.0] * len(threads)
    for _ in range(repeats):
        for k, t in enumerate(threads):
            cache = CachedDataset(ds)
            cache.render_threads = t
            t0 = time.perf_counter()
            cache.get_batch(range(scenes))
            best[k] = max(best[k], scenes / (time.perf_counter() - t0))
    return best


def goal(size: int, domain: str) -> int | None:
    """The scenes/s goal of a size and domain (64x64 only)."""
    if size != 64:
        return None
    return 2000 if domain.startswith("corrupt:") else 5000


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--sizes", type=int, nargs="+", default=[64, 128])
    p.add_argument("--domains", nargs="+", default=["source", "target", "corrupt:fog:3"])
    p.add_argument("--fill", type=int, default=1024, help="scenes of the cache-fill measurement")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    kept = keep_freed_memory()  # as in the trainer, which renders the scene cache
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {a.batch}, freed memory kept: {kept}"
    )
    for size in a.sizes:
        for domain in a.domains:
            rate, cpu_rate = scenes_per_second(size, domain, a.batch, a.repeats)
            target = goal(size, domain)
            note = "" if target is None else f"  (goal >= {target}: {'met' if rate >= target else 'not met'})"
            print(f"{size:4d}x{size:<4d} {domain:24s} {rate:9.0f} scenes/s {cpu_rate:9.0f} per CPU-s{note}")
    print(
        f"\nrender-once cache fill ({a.fill} scenes in {CachedDataset.chunk}-scene chunks), 1 chunk at a time "
        f"vs {RENDER_THREADS} (the default), best of {a.repeats}:"
    )
    for size in a.sizes:
        for domain in a.domains:
            one, many = cache_fill_per_second(size, domain, a.fill, (1, RENDER_THREADS), a.repeats)
            target = goal(size, domain)
            note = "" if target is None else f"  (goal >= {target}: {'met' if many >= target else 'not met'})"
            print(
                f"{size:4d}x{size:<4d} {domain:24s} {one:9.0f} -> {many:6.0f} scenes/s ({many / one:.2f}x){note}"
            )


if __name__ == "__main__":
    main()
