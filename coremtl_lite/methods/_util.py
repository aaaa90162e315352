"""Helpers shared by the methods' state hooks."""

from __future__ import annotations

from collections.abc import Sequence


def epoch_means(stats: dict[str, float], task_names: Sequence[str], who: str) -> list[float]:
    """The mean training loss per task from the trainer's ``on_epoch_end(stats)``.

    Looks up ``stats[task]``, then ``stats["loss/<task>"]``; a missing task is an error naming it.
    """
    out = []
    for t in task_names:
        for key in (t, f"loss/{t}"):
            if key in stats:
                out.append(float(stats[key]))
                break
        else:
            raise KeyError(
                f"{who}.on_epoch_end: stats lack the mean loss of task {t!r} "
                f"(looked for {t!r} and 'loss/{t}'); got keys {sorted(stats)}"
            )
    return out
