"""MT-CRL's spurious-correlation study (Hu et al. 2022, §2.2 and §4) run through the one training loop.

Every number of tutorial 07 comes from here: a run is a :class:`~coremtl_lite.config.Config` trained by
:class:`~coremtl_lite.train.Trainer` (any dataset with known causal factors -- ``multisem``,
``digit_pairs``, ``confounded_scenes`` -- and any registered method and architecture), then scored with
the weights selected on the validation split:

* ``acc_train``, ``acc_source``, ``acc_target``: mean accuracy over the tasks on (a part of) the
  training set, on the in-distribution test split (training correlations) and on the shifted one;
* ``acc_chance``: the trivial baseline, the expected accuracy of a uniform random guess (1 / number
  of classes; 0.5 for the binary tasks, 0.1 for a digit);
* ``rho_spur``: MT-CRL's spurious score (share of input-gradient saliency on non-causal factors,
  :func:`~coremtl_lite.diagnostics.spurious.spurious_scores_for`: on the generative factors for
  DigitPairs, whose colour shortcut is not causal, on the input elements elsewhere) on the shifted
  test split, and ``rho_chance``, the score of a model that has learnt nothing (uniform or isotropic
  saliency) to read it against;
* ``do_other`` (datasets with an intervention, ``confounded_scenes``): how much a task's predicted
  probability moves when only the other task's factor is intervened on
  (:func:`~coremtl_lite.diagnostics.spurious.intervention_sensitivity`).

:func:`stl_vs_mtl` gives one row of MT-CRL's Table 1 (one multi-task model against one model per
task); :func:`over_seeds` averages any of these over seeds (mean and sample standard deviation,
:func:`coremtl_lite.experiments.mean_rows`), :func:`over_seeds_table` a whole table of them at once
(each seed's table in a process of its own), and :func:`format_rows` prints them
(:func:`coremtl_lite.experiments.format_table`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import torch

from coremtl_lite.config import Config, apply_overrides, get_config
from coremtl_lite.diagnostics.spurious import accuracy, intervention_sensitivity, spurious_scores_for
from coremtl_lite.experiments import (
    DUAL_STREAM,
    VANILLA,
    format_table,
    mean_rows,
    single_task_runs,
    train_and_evaluate,
)
from coremtl_lite.experiments.processes import map_forked
from coremtl_lite.protocols import ToggleableDataset

__all__ = [
    "METHODS",
    "MODELS",
    "MTCRL_PAPER_TABLE1",
    "MTCRL_PAPER_TABLE5",
    "ROW_KEYS",
    "STUDIES",
    "SpuriousRun",
    "format_rows",
    "mean_rows",
    "over_seeds",
    "over_seeds_table",
    "run_spurious",
    "stl_vs_mtl",
    "study_config",
]

#: the columns of a study row
ROW_KEYS = ("acc_train", "acc_source", "acc_target", "rho_spur")

#: THE PAPER'S numbers (MT-CRL, Hu et al. 2022), for reference beside ours -- other data, models and budgets.
#: Table 1: ``{dataset: {model: (acc_train, acc_val, rho_spur)}}``; its Multi-MNIST is our DigitPairs' model.
MTCRL_PAPER_TABLE1 = {
    "Multi-SEM": {"STL": (0.931, 0.906, 0.128), "MTL": (0.936, 0.882, 0.246)},
    "Multi-MNIST": {"STL": (0.981, 0.874, 0.261), "MTL": (0.987, 0.846, 0.328)},
}
#: Table 5 (appendix B, captioned "Results on Multi-SEM with more than 2 tasks"):
#: ``{T: (MTL acc_val, MTL rho_spur, STL acc_val, STL rho_spur)}``. As printed in the paper, its T = 2
#: column repeats Table 1's *Multi-MNIST* numbers (0.846, 0.328, 0.874, 0.261), not its Multi-SEM ones.
MTCRL_PAPER_TABLE5 = {
    2: (0.846, 0.328, 0.874, 0.261),
    3: (0.838, 0.357, 0.861, 0.289),
    4: (0.824, 0.391, 0.848, 0.314),
    5: (0.809, 0.429, 0.836, 0.354),
    6: (0.785, 0.475, 0.827, 0.385),
    7: (0.752, 0.530, 0.810, 0.407),
    8: (0.719, 0.594, 0.797, 0.435),
}

#: every study run: test domains evaluated once at the end (by :func:`run_spurious`), no checkpoints, and
#: the optimiser of MT-CRL's experiments for every method -- Adam at a constant learning rate (3e-3), no
#: weight decay and no gradient clipping (the clip at norm 10 is CORE-MTL's, not MT-CRL's)
STUDY_BASE = (
    "data.eval_domains=",
    "train.checkpoint_every=0",
    "train.progress=false",
    "optim.lr=3e-3",
    "optim.warmup_epochs=0",
    "optim.min_lr_ratio=1",
    "optim.weight_decay=0",
    "optim.grad_clip=0",
)

#: the data of each study (the ``cpu`` sizes) ...
STUDIES: dict[str, tuple[str, ...]] = {
    "multisem": (
        "data.dataset=multisem",
        "data.tasks=task_a,task_b",
        "data.train_size=512",
        "data.val_size=256",
        "data.test_size=2000",
        "data.batch_size=64",
        "optim.epochs=20",
    ),
    "digit_pairs": (
        "data.dataset=digit_pairs",
        "data.tasks=left,right",
        "data.image_size=16",
        "data.train_size=2048",
        "data.val_size=512",
        "data.test_size=1000",
        "data.batch_size=64",
        "optim.epochs=10",
    ),
    "confounded_scenes": (
        "data.dataset=confounded_scenes",
        "data.tasks=has_cone,has_box",
        "data.image_size=32",
        "data.train_size=1024",
        "data.val_size=256",
        "data.test_size=512",
        "data.batch_size=64",
        "optim.epochs=8",  # the validation accuracy is flat from about epoch 5 (16 epochs measured)
    ),
}
#: ... and their sizes in the ``ci`` profile (seconds)
CI_SIZES: dict[str, tuple[str, ...]] = {
    "multisem": ("data.train_size=256", "data.test_size=500", "optim.epochs=8"),
    "digit_pairs": ("data.train_size=256", "data.val_size=128", "data.test_size=256", "optim.epochs=2"),
    "confounded_scenes": (
        "data.image_size=16",
        "data.train_size=128",
        "data.val_size=64",
        "data.test_size=128",
        "optim.epochs=2",
    ),
}

#: the compared models: MT-CRL's shared-bottom model and its modular model, with the same capacity --
#: the representation size d = K x D = 128 fixed and each of the K modules D = d/K dimensions (MT-CRL
#: appendix F), the same total width (K x module_width = 64 channels or 256 hidden units); CORE-MTL's
#: vanilla shared encoder and its dual-stream model
MODELS: dict[str, tuple[str, ...]] = {
    "shared_bottom": (
        "model.architecture=mtcrl",
        "model.num_modules=1",
        "model.module_dim=128",
        "model.module_width=64",
    ),
    "modules": (
        "model.architecture=mtcrl",
        "model.num_modules=8",
        "model.module_dim=16",
        "model.module_width=8",
    ),
    "vanilla": VANILLA,
    "core_mtl": DUAL_STREAM + ("loss.perceptual=ssim",),
}

#: the compared methods (MT-CRL's: appendix H's weights, and the invariance term alone). MT-CRL, IRM and DANN
#: see the validation split as a second environment; "EW (train + val)" gives EW the same data in its
#: task loss, MT-CRL's protocol for its baselines (§4)
METHODS: dict[str, tuple[str, ...]] = {
    "EW": ("train.method=ew",),
    "EW (train + val)": ("train.method=ew", "data.train_on_val=true"),  # MT-CRL §4: baselines also fit on val
    "PCGrad": ("train.method=pcgrad",),
    "IRM": ("train.method=irm",),
    "DANN": ("train.method=dann",),
    "MT-CRL (paper weights)": ("train.method=mtcrl",),
    "MT-CRL (G-IRM only)": (
        "train.method=mtcrl",
        'train.method_options={"lambda_decor": 0, "lambda_sps": 0, "lambda_bal": 0}',
    ),
}


def study_config(
    study: str,
    model: str = "shared_bottom",
    method: str = "EW",
    profile: str | None = None,
    overrides: Sequence[str] = (),
) -> Config:
    """The config of one study run: ``study`` of :data:`STUDIES` (sized for ``profile``, default
    ``$COREMTL_PROFILE``), ``model`` of :data:`MODELS`, ``method`` of :data:`METHODS`, then ``overrides``."""
    for kind, name, table in (
        ("study", study, STUDIES),
        ("model", model, MODELS),
        ("method", method, METHODS),
    ):
        if name not in table:
            raise ValueError(f"unknown {kind} {name!r}; choose one of {', '.join(table)}")
    profile = get_config(profile).profile
    sizes = CI_SIZES[study] if profile == "ci" else ()
    return get_config(
        profile, [*STUDY_BASE, *STUDIES[study], *sizes, *MODELS[model], *METHODS[method], *overrides]
    )


@dataclasses.dataclass
class SpuriousRun:
    """One trained run: its ``row`` (:data:`ROW_KEYS`, ``acc_chance``, ``rho_chance``, ``sel_epoch`` (the
    selected epoch), ``do_other`` where the data allow; means over tasks; ``rho_<task>`` and
    ``acc_target_<task>`` per task too) and the ``trainer`` (model with the trainer's selected weights
    loaded, splits, history)."""

    row: dict[str, float]
    trainer: Any


def _head(dataset: Any, n: int) -> dict:
    return dataset.get_batch(torch.arange(min(n, len(dataset))))


SELECTIONS = ("per_task", "joint", "last")


class PerTaskSelection:
    """Trainer callback: after every validation pass, keep a copy of the weights for each task whose own
    validation accuracy improved (ties keep the earlier epoch). ``state[task]``, ``epoch[task]``."""

    def __init__(self, tasks: Sequence[str]):
        self.tasks = list(tasks)
        self.best = {t: -float("inf") for t in self.tasks}
        self.state: dict[str, dict | None] = {t: None for t in self.tasks}
        self.epoch: dict[str, int] = {t: 0 for t in self.tasks}

    def on_epoch_end(self, trainer: Any, history: Any) -> None:
        val = history.epochs[-1].get("val")
        if not val:
            return
        for t in self.tasks:
            acc = float(val[t]["acc"])
            if acc > self.best[t]:
                self.best[t], self.epoch[t] = acc, trainer.epoch
                self.state[t] = {
                    k: v.detach().to("cpu", copy=True) for k, v in trainer.model.state_dict().items()
                }


def run_spurious(
    cfg: Config,
    score_samples: int = 256,
    train_samples: int = 512,
    callbacks: Sequence[Any] = (),
    selection: str = "per_task",
) -> SpuriousRun:
    """Train ``cfg`` with the one loop and score it (module docstring).

    ``selection`` picks the weights each task is scored with, the same rule for a multi-task and a
    single-task run so that STL and MTL are compared fairly:

    * ``"per_task"`` (default): for each task, the epoch of its own best validation accuracy -- what
      one model per task (STL) gets by construction, given to the multi-task model too;
    * ``"joint"``: the trainer's one selected epoch for all tasks (best mean validation score);
    * ``"last"``: the final weights.

    ``acc_source``/``acc_target`` use the whole ``source``/``target`` test splits (built on demand, so
    ``data.eval_domains`` may be empty to skip per-epoch test evaluations); ``acc_train`` the first
    ``train_samples`` training samples; ``rho_spur`` (and its chance level ``rho_chance``) the first
    ``score_samples`` target samples, on the generative factors where the dataset gives them
    (:func:`~coremtl_lite.diagnostics.spurious.spurious_scores_for`). Afterwards the trainer's model
    holds the weights of the trainer's own (joint) selection, for figures.
    """
    from coremtl_lite.train.evaluation import to_device

    if selection not in SELECTIONS:
        raise ValueError(f"run_spurious: selection must be one of {SELECTIONS}, got {selection!r}")
    picker = PerTaskSelection(cfg.data.tasks)
    trainer = train_and_evaluate(cfg, domains=(), callbacks=[*callbacks, picker]).trainer  # scored below
    tasks = trainer.task_names
    final = {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}
    if selection == "joint":
        trainer.load_selected_weights()
    joint = {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}
    train_batch = to_device(_head(trainer.splits.train, train_samples), trainer.device)
    classes = {task.name: task.channels for task in trainer.tasks}
    per_task: dict[str, dict[str, float]] = {}
    for t in tasks:
        state = picker.state[t] if selection == "per_task" and picker.state[t] is not None else joint
        trainer.model.load_state_dict(state)
        trainer.model.eval()
        results = trainer.evaluate(domains=("source", "target"), use_best=False)  # builds the test sets
        target = trainer.splits.test["target"]
        batch = to_device(_head(target, score_samples), trainer.device)
        scores = spurious_scores_for(trainer.model, target, batch, [t])
        per_task[t] = {
            "acc_source": results["source"][t]["acc"],
            "acc_target": results["target"][t]["acc"],
            "acc_chance": 1.0 / classes[t],
            "acc_train": accuracy(trainer.model, train_batch, [t])[t],
            "rho_spur": scores[t],
            "rho_chance": scores["chance"],
            "sel_epoch": float(
                picker.epoch[t]
                if selection == "per_task"
                else (trainer.best_epoch if selection == "joint" else trainer.epoch)
            ),
        }
        if isinstance(target, ToggleableDataset):
            per_task[t]["do_other"] = intervention_sensitivity(trainer.model, target, [t], score_samples)[t]
    row = {k: sum(per_task[t][k] for t in tasks) / len(tasks) for k in per_task[tasks[0]]}
    row.update({f"rho_{t}": per_task[t]["rho_spur"] for t in tasks})
    row.update({f"acc_target_{t}": per_task[t]["acc_target"] for t in tasks})
    trainer.model.load_state_dict(final)
    trainer.load_selected_weights()
    return SpuriousRun(row, trainer)


def stl_vs_mtl(
    cfg: Config, runs: dict[str, SpuriousRun] | None = None, **kwargs: Any
) -> dict[str, dict[str, float]]:
    """One row of MT-CRL's Table 1: ``{"MTL": row, "STL": row}``.

    MTL trains ``cfg`` (all of ``cfg.data.tasks`` in one model); STL trains one model per task
    (:func:`~coremtl_lite.experiments.single_task_runs`, same data, architecture and schedule) and
    averages the per-task rows. Both use the same selection rule (:func:`run_spurious`). ``runs``, if
    given, receives the trained runs (``"MTL"`` and ``"STL <task>"``), e.g. for saliency figures;
    ``kwargs`` go to :func:`run_spurious`.
    """
    mtl_run = run_spurious(cfg, **kwargs)
    stl_runs = {task: run_spurious(c, **kwargs) for task, c in single_task_runs(cfg)}
    if runs is not None:
        runs["MTL"] = mtl_run
        runs.update({f"STL {task}": r for task, r in stl_runs.items()})
    stl = mean_rows([r.row for r in stl_runs.values()])  # drops the per-task keys
    return {"MTL": {k: mtl_run.row[k] for k in stl}, "STL": stl}


def format_rows(
    rows: dict[str, dict[str, float]], keys: Sequence[str] | None = None, label: str = "run"
) -> str:
    """A plain-text table (:func:`~coremtl_lite.experiments.format_table`): one line per ``rows`` entry,
    one column per key (default: the first row's keys), values to 3 decimals, ``-`` where a row lacks a key."""
    keys = list(keys or next(iter(rows.values())))
    body = [[str(name), *(f"{row[k]:.3f}" if k in row else "-" for k in keys)] for name, row in rows.items()]
    return format_table([label, *keys], body)


def over_seeds(fn: Callable[[Config], Any], cfg: Config, seeds: Sequence[int], processes: int = 1) -> Any:
    """``fn(cfg with train.seed=s)`` for every seed, averaged: rows (dicts of floats) are averaged key
    by key, dicts of rows (as :func:`stl_vs_mtl` returns) entry by entry; every mean comes with its
    ``<key>_std`` over the seeds (:func:`mean_rows`).

    With ``processes`` > 1 the seeds train at the same time
    (:func:`~coremtl_lite.experiments.processes.map_forked`): the first seed in this process -- so
    ``fn`` may keep its trained run through a closure -- the others in forked processes, each sending
    back its rows. The numbers are those of ``processes=1``."""
    return over_seeds_table({"": (fn, cfg)}, seeds, processes)[""]


def over_seeds_table(
    jobs: dict[str, tuple[Callable[[Config], Any], Config]], seeds: Sequence[int], processes: int = 1
) -> dict[str, Any]:
    """:func:`over_seeds` of every entry ``label: (fn, cfg)`` of a table: ``{label: averaged rows}``.

    With ``processes`` > 1 each seed's *whole table* runs in one process (the first seed in this one,
    so ``fn`` may keep its runs through a closure, as in :func:`over_seeds`): a table of N comparisons
    waits once for its slowest seed instead of N times, and forks once per seed instead of once per
    run. Every run seeds itself from its config, so the numbers are those of ``processes=1``."""

    def table(seed: int) -> dict[str, Any]:
        out = {}
        for label, (fn, cfg) in jobs.items():
            run = fn(apply_overrides(cfg, [f"train.seed={seed}"]))
            out[label] = run.row if isinstance(run, SpuriousRun) else run
        return out

    outs = map_forked(table, seeds, processes)
    return {label: _average([o[label] for o in outs]) for label in jobs}


def _average(outs: list[Any]) -> Any:
    """Rows averaged key by key, or dicts of rows entry by entry, each mean with its ``<key>_std``."""
    if all(isinstance(v, dict) for v in outs[0].values()):
        return {k: mean_rows([o[k] for o in outs], with_std=True) for k in outs[0]}
    return mean_rows(outs, with_std=True)
