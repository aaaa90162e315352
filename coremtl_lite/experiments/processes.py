"""Independent runs side by side: ``[fn(item) for item in items]`` in forked processes.

A 2-core laptop trains the tiny models of the spurious-correlation study (MT-CRL's experiments) on one
thread each, so the seeds of one comparison can train at the same time. :func:`map_forked` keeps the
first item in the calling process -- so a caller can keep that run's trainer (for figures) through a
closure -- and forks a child process for each other item. A child starts as a copy of the caller, runs
``fn`` on its item on one torch thread and sends the result back pickled, so ``fn`` of the *other*
items must return something picklable (the study's rows of floats are). Each run seeds itself from its
own config, so with the caller on one thread too (``torch.set_num_threads(1)``, as the tutorials do)
the results are the numbers of a loop in one process (``tests/test_processes.py`` checks it).

Where ``fork`` does not exist (Windows) or ``processes`` is 1, it is that plain loop.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import traceback
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import torch

T = TypeVar("T")


def _child(fn: Callable[[Any], Any], item: Any, send: Any) -> None:
    # one thread: the OpenMP thread pool the parent may have started does not exist in a forked child,
    # and a parallel region over it would wait for those threads forever
    torch.set_num_threads(1)
    try:
        send.send((True, fn(item)))
    except BaseException:  # noqa: BLE001 -- the parent re-raises it with the child's traceback
        send.send((False, traceback.format_exc()))
    finally:
        send.close()


def map_forked(fn: Callable[[Any], T], items: Sequence[Any], processes: int = 1) -> list[T]:
    """``[fn(item) for item in items]``, with up to ``processes`` of them running at once.

    ``items[0]`` runs in this process, the others each in a forked child (at most ``processes - 1``
    children at a time). A failure in a child is raised here as a ``RuntimeError`` carrying the child's
    traceback; the other children are stopped.
    """
    if processes < 1:
        raise ValueError(f"map_forked: processes must be >= 1, got {processes}")
    items = list(items)
    if processes == 1 or len(items) < 2 or "fork" not in multiprocessing.get_all_start_methods():
        return [fn(item) for item in items]
    ctx = multiprocessing.get_context("fork")
    results: list[Any] = [None] * len(items)
    pending = list(range(1, len(items)))
    running: dict[int, tuple[Any, Any]] = {}  # item index -> (process, receiving end of its pipe)

    def start_children() -> None:
        while pending and len(running) < processes - 1:
            i = pending.pop(0)
            recv, send = ctx.Pipe(duplex=False)
            proc = ctx.Process(target=_child, args=(fn, items[i], send), daemon=True)
            proc.start()
            send.close()  # the child holds its own copy; EOF reaches us if it dies
            running[i] = (proc, recv)

    try:
        start_children()
        results[0] = fn(items[0])
        while running:
            ready = multiprocessing.connection.wait([recv for _, recv in running.values()])
            for i, (proc, recv) in list(running.items()):
                if recv not in ready:
                    continue
                try:
                    ok, value = recv.recv()
                except EOFError:
                    proc.join()
                    raise RuntimeError(
                        f"map_forked: the child process for item {i} ({items[i]!r}) died "
                        f"(exit code {proc.exitcode}) before sending its result"
                    ) from None
                proc.join()
                del running[i]
                if not ok:
                    raise RuntimeError(
                        f"map_forked: item {i} ({items[i]!r}) failed in its child process:\n{value}"
                    )
                results[i] = value
            start_children()
    finally:
        for proc, recv in running.values():
            proc.terminate()
            proc.join()
            recv.close()
    return results
