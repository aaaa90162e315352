"""Single-task learning (STL): one model per task, the reference point of the Delta_m metric."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

from coremtl_lite.config import Config
from coremtl_lite.methods.base import EqualWeighting, register


@register("stl")
class SingleTask(EqualWeighting):
    """The single-task baseline: plain gradient descent on one task's loss.

    STL trains one separate model per task (the ``M_STL`` reference of the relative score Delta_m), so the
    method itself is EW over exactly one task. Run all of them with :func:`single_task_configs`,
    which yields one config per task with ``data.tasks=(t,)``; giving this method several tasks is
    an error, since that would silently be multi-task EW.
    """

    def __init__(self, task_names):
        super().__init__(task_names)
        if self.num_tasks != 1:
            raise ValueError(
                f"stl trains one model per task but got tasks {self.task_names}; build one "
                "run per task with coremtl_lite.methods.stl.single_task_configs(cfg)"
            )


def single_task_configs(cfg: Config) -> Iterator[tuple[str, Config]]:
    """Yield ``(task, cfg_t)`` for every task of ``cfg.data.tasks``: the STL runs of a config.

    ``cfg_t`` is a copy of ``cfg`` with ``data.tasks=(task,)``, ``train.method="stl"``, the task's
    own ``loss.task_weights`` entry only, and ``train.out_dir`` suffixed with ``/stl-<task>``.
    Everything else (data, model, seed, optimiser) is unchanged, so the runs are comparable.
    """
    for task in cfg.data.tasks:
        weights = {k: v for k, v in cfg.loss.task_weights.items() if k == task}
        yield (
            task,
            dataclasses.replace(
                cfg,
                data=dataclasses.replace(cfg.data, tasks=(task,)),
                loss=dataclasses.replace(cfg.loss, task_weights=weights),
                train=dataclasses.replace(cfg.train, method="stl", out_dir=f"{cfg.train.out_dir}/stl-{task}"),
            ),
        )
