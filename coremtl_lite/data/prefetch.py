"""Render batches ahead: iterate a loader in a background thread while the caller trains.

A synthetic dataset renders a batch as a pure function of its indices, so the next batches can be
rendered while the current step runs; torch operators release Python's GIL, so the two overlap.
:func:`ahead` yields exactly the items of the iterable it is given, in the same order -- the thread
only runs the iteration earlier -- so training on ``ahead(loader)`` sees the same batches as on
``loader`` (what the tests check bit for bit) and exact resume is unaffected.

What it does not do: change any thread setting. ``torch.set_num_threads`` is process-wide; the
background thread runs torch with the settings the process already has.

**Off by default** (:data:`DEFAULT_PREFETCH` = 0). On a 2-core CPU the background thread's torch
operators start a second OpenMP team of threads beside the training step's, and the two teams fight
over the cores: measured on a shared 2-core machine in one process, alternating epochs (cpu profile,
2 threads, scenes cached), the loop ran at about half the speed with ``prefetch=2`` (EW 318-402
against 131-177 img/s, CORE-MTL 157-226 against 69-85). There the render-once cache (:mod:`coremtl_lite.data.cache`) is what keeps
rendering off the training loop. Turn rendering ahead on (``Trainer(prefetch=2)``) when the step runs
on a GPU and leaves the CPU idle, or for a dataset too large for the cache on a machine with cores
to spare, and measure (``benchmarks/bench_train.py --uncached``).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Generator, Iterable
from typing import Any

__all__ = ["DEFAULT_PREFETCH", "ahead"]

#: batches rendered ahead of the training step by default: none (see the module docstring)
DEFAULT_PREFETCH = 0

_DONE = object()


def ahead(items: Iterable[Any], depth: int = 2) -> Generator[Any, None, None]:
    """The items of ``items`` in order, produced up to ``depth`` items ahead in a background thread.

    ``depth=0`` iterates in the caller's thread. An exception raised while producing an item is raised
    in the caller at that item. Leaving the loop early (``break``, an exception, garbage collection of
    the generator) stops the thread and waits for it, so no rendering outlives the loop; at most
    ``depth + 1`` items are produced for nothing.
    """
    if depth < 0:
        raise ValueError(f"prefetch depth must be >= 0, got {depth}")
    if depth == 0:
        yield from items
        return
    out: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(entry: tuple[bool, Any]) -> bool:
        while not stop.is_set():
            try:
                out.put(entry, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def work() -> None:
        try:
            for item in items:
                if stop.is_set() or not put((True, item)):
                    return
            put((True, _DONE))
        except BaseException as exc:  # handed to the caller, raised there
            put((False, exc))

    worker = threading.Thread(target=work, name="coremtl-prefetch", daemon=True)
    worker.start()
    try:
        while True:
            ok, value = out.get()
            if not ok:
                raise value
            if value is _DONE:
                return
            yield value
    finally:
        stop.set()
        worker.join()
