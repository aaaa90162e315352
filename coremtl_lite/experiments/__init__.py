"""The experiments layer: what a comparison trains, how one run is trained and evaluated, how runs are
named, averaged over seeds and printed.

* :mod:`~coremtl_lite.experiments.recipes` -- the run recipes as data (CORE-MTL, a baseline with any
  method, the ablation steps, soft grounding, single-task learning expanded per task);
* :mod:`~coremtl_lite.experiments.runs` -- :func:`train_and_evaluate` (a config -> a trained model and
  its test metrics beside the trivial predictors') and :func:`run_key`, the one run identity;
* :mod:`~coremtl_lite.experiments.aggregate` -- mean and sample standard deviation over seeds, and their one cell format;
* :mod:`~coremtl_lite.experiments.tables` -- the one table formatter (markdown or plain text);
* :mod:`~coremtl_lite.experiments.processes` -- independent runs (the seeds of a comparison) side by side in
  forked processes.

The demo (``coremtl-lite demo``), the benchmark suites, the tutorials' shared runs and MT-CRL's
spurious-correlation study are built on these.
"""

from coremtl_lite.experiments.aggregate import format_mean_std, mean_rows, mean_std
from coremtl_lite.experiments.recipes import (
    ABLATION,
    CORE,
    CORE_MTL,
    CORE_SOFT,
    DUAL_STREAM,
    RECIPES,
    STL,
    VANILLA,
    Recipe,
    baseline,
    expand,
    recipe,
    recipe_config,
    single_task_runs,
)
from coremtl_lite.experiments.runs import TrainedRun, run_key, train_and_evaluate
from coremtl_lite.experiments.tables import format_table

__all__ = [
    "ABLATION",
    "CORE",
    "CORE_MTL",
    "CORE_SOFT",
    "DUAL_STREAM",
    "RECIPES",
    "Recipe",
    "STL",
    "TrainedRun",
    "VANILLA",
    "baseline",
    "expand",
    "format_mean_std",
    "format_table",
    "mean_rows",
    "mean_std",
    "recipe",
    "recipe_config",
    "run_key",
    "single_task_runs",
    "train_and_evaluate",
]
