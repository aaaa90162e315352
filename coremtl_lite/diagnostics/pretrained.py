"""Load the model a tutorial needs, or train a small one when there is none.

Tutorials 03-05 look inside trained models. :func:`load_or_train` keeps one run folder per
configuration (``runs/tutorials/<name>-<profile>-<run key>``, the key being
:func:`coremtl_lite.experiments.run_key`, the one run identity of the package): when its final checkpoint
exists (written by an earlier tutorial or an earlier run of this one) the trainer is rebuilt from it
in seconds; otherwise the run is trained with the one :class:`~coremtl_lite.train.Trainer` and saved.
Callbacks with ``state_dict``/``load_state_dict`` (e.g.
:class:`~coremtl_lite.diagnostics.gradients.GradientCosineLogger`) are saved beside the checkpoint
(``callbacks.json``) and restored, so a loaded run also has its training-time measurements.

:func:`tutorial_config` gives the runs the tutorials compare, the recipes of
:data:`coremtl_lite.experiments.RECIPES`: CORE-MTL (dual-stream model with its Eq. 16 extras and equal
task weights), CORE-MTL with soft grounding, and the vanilla shared-encoder baselines EW and PCGrad.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from coremtl_lite.config import Config, get_config
from coremtl_lite.experiments import RECIPES, recipe, run_key, train_and_evaluate
from coremtl_lite.protocols import BatchDataset, Stateful

__all__ = ["load_or_train", "probe_batch", "run_dir", "tutorial_config", "tutorial_run"]

#: per-profile overrides of the tutorial runs (none today: the ``cpu`` profile is sized so that the
#: validation curves flatten within its budget, and the tutorials use it as it is, like the demo)
TUTORIAL_PROFILE_OVERRIDES: dict[str, tuple[str, ...]] = {}


def tutorial_config(
    variant: str = "core_mtl", profile: str | None = None, overrides: Sequence[str] = ()
) -> Config:
    """The config of one compared run (a recipe of :data:`coremtl_lite.experiments.RECIPES`) on ``profile``
    (default: ``$COREMTL_PROFILE``)."""
    if variant not in RECIPES:
        raise ValueError(f"unknown variant {variant!r}; choose one of {', '.join(RECIPES)}")
    base = get_config(profile)
    extra = TUTORIAL_PROFILE_OVERRIDES.get(base.profile, ())
    return get_config(base.profile, [*extra, *recipe(variant).overrides, "train.progress=false", *overrides])


def run_dir(cfg: Config, name: str, root: str | Path = "runs/tutorials") -> Path:
    """The run folder of ``cfg``: ``<root>/<name>-<profile>-<run key>`` (:func:`coremtl_lite.experiments.run_key`)."""
    return Path(root) / f"{name}-{cfg.profile}-{run_key(cfg)}"


def _save_callbacks(path: Path, callbacks: list[Any]) -> None:
    states = [cb.state_dict() if isinstance(cb, Stateful) else None for cb in callbacks]
    path.write_text(json.dumps(states))


def _load_callbacks(path: Path, callbacks: list[Any]) -> bool:
    wanted = [isinstance(cb, Stateful) for cb in callbacks]
    if not any(wanted):
        return True
    if not path.is_file():
        return False
    states = json.loads(path.read_text())
    if len(states) != len(callbacks) or any(w and s is None for w, s in zip(wanted, states)):
        return False
    for cb, w, s in zip(callbacks, wanted, states):
        if w:
            cb.load_state_dict(s)
    return True


def load_or_train(
    cfg: Config,
    path: str | Path | None = None,
    callbacks: Iterable[Any] = (),
    name: str = "model",
    retrain: bool = False,
    verbose: bool = True,
):
    """A trained :class:`~coremtl_lite.train.Trainer` for ``cfg``: loaded when its run exists, else trained.

    Args:
        cfg: the run's config (its ``train.out_dir`` is replaced by the run folder).
        path: the run folder; default :func:`run_dir` ``(cfg, name)``.
        callbacks: trainer callbacks; their state is saved and restored (module docstring).
        name: a short name for the run folder.
        retrain: train even when a finished run exists.
        verbose: print whether the run was loaded or trained.

    Returns the trainer (``.model``, ``.tasks``, ``.splits``, ``.history``, ``.evaluate``); its
    attribute ``loaded`` tells whether it came from disk.
    """
    from coremtl_lite.config import apply_overrides
    from coremtl_lite.train import CheckpointError, Trainer, load_checkpoint

    callbacks = list(callbacks)
    folder = Path(path) if path is not None else run_dir(cfg, name)
    cfg = apply_overrides(cfg, [f"train.out_dir={folder}", "train.checkpoint_every=1"])
    last = folder / "last.pt"
    if last.is_file() and not retrain:
        try:
            state = load_checkpoint(last)
            finished = int(state["epoch"]) >= cfg.optim.epochs
            del state
            if finished and _load_callbacks(folder / "callbacks.json", callbacks):
                trainer = Trainer(cfg, callbacks=callbacks)
                trainer.resume(last)
                trainer.model.eval()
                trainer.loaded = True
                if verbose:
                    print(f"loaded {name} ({cfg.profile} profile, {trainer.epoch} epochs) from {folder}")
                return trainer
        except (CheckpointError, KeyError, ValueError, json.JSONDecodeError) as err:
            if verbose:
                print(f"cannot reuse {last} ({err}); training again")
    if verbose:
        print(f"training {name} ({cfg.profile} profile, {cfg.optim.epochs} epochs) into {folder} ...")
    trainer = train_and_evaluate(cfg, domains=(), callbacks=callbacks).trainer  # the tutorials evaluate it
    folder.mkdir(parents=True, exist_ok=True)
    _save_callbacks(folder / "callbacks.json", callbacks)
    trainer.model.eval()
    trainer.loaded = False
    return trainer


def probe_batch(cfg: Config, size: int = 16) -> dict:
    """A fixed batch of the validation split of ``cfg`` (deterministic: the split is seeded by ``train.seed``)."""
    from coremtl_lite.data import build_splits

    val = build_splits(cfg.data, cfg.train.seed).val
    n = min(size, len(val))
    if isinstance(val, BatchDataset):
        return val.get_batch(list(range(n)))
    from torch.utils.data import default_collate

    return default_collate([val[i] for i in range(n)])


def tutorial_run(
    variant: str = "core_mtl",
    profile: str | None = None,
    overrides: Sequence[str] = (),
    measurements: int = 40,
    verbose: bool = True,
):
    """The shared run of tutorials 03-05: :func:`tutorial_config` + :func:`load_or_train`, always with a
    :class:`~coremtl_lite.diagnostics.gradients.GradientCosineLogger` (about ``measurements`` records
    over training, on :func:`probe_batch`), so whichever tutorial trains a run first, the others reuse it.

    The logger is the trainer's attribute ``grad_log``.
    """
    from coremtl_lite.diagnostics.gradients import GradientCosineLogger
    from coremtl_lite.train import Trainer

    cfg = tutorial_config(variant, profile, overrides)
    steps = _steps_per_epoch(cfg) * cfg.optim.epochs
    logger = GradientCosineLogger(
        probe_batch(cfg), every=max(1, steps // max(measurements, 1)), seed=cfg.train.seed
    )
    trainer: Trainer = load_or_train(cfg, callbacks=[logger], name=variant, verbose=verbose)
    trainer.grad_log = logger
    return trainer


def _steps_per_epoch(cfg: Config) -> int:
    n = cfg.data.train_size
    steps = n // cfg.data.batch_size if n >= cfg.data.batch_size else 1
    return min(steps, cfg.train.max_steps_per_epoch) if cfg.train.max_steps_per_epoch else steps
