"""Train and evaluate one configuration, and name it: the run identity shared by every cache.

* :func:`train_and_evaluate` -- train a config with the one :class:`~coremtl_lite.train.Trainer`,
  select the weights on the validation split, evaluate the test split of the requested domains and
  the trivial predictors (majority class, mean depth, mean normal, ... of the training split) on the
  same data: every number stands next to what a constant scores;
* :func:`run_key` -- the one hash of a resolved config that names a run wherever runs are cached
  (the benchmark's ``runs/<key>.json``, the tutorials' run folders, the demo's run folders). For
  ShadedScenes data it includes :data:`SCENES_VERSION`, so runs cached with an older scene generator
  are never read back as runs on the current one.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from coremtl_lite.config import Config
from coremtl_lite.data import scenes

__all__ = [
    "IDENTITY_IGNORES",
    "SCENES_DATASETS",
    "SCENES_VERSION",
    "TrainedRun",
    "run_key",
    "train_and_evaluate",
]

#: the version of the ShadedScenes generator (:data:`coremtl_lite.data.scenes.SCENES_VERSION`: its priors,
#: renderer and labels). It is part of the identity of every run on a dataset of :data:`SCENES_DATASETS`, so a
#: cache written with another generator (e.g. a ShadedScenes v2 benchmark folder) is never read back as this one
SCENES_VERSION = scenes.SCENES_VERSION
#: the datasets rendered by the ShadedScenes generator (ShadedAttributes labels its scenes; ConfoundedScenes
#: draws its objects with the same object factors)
SCENES_DATASETS = ("shaded_scenes", "shaded_attributes", "confounded_scenes")

#: config keys that do not change what a run computes, only where and how it reports: left out of :func:`run_key`
#: (the device too: a run is the same experiment on any device, its numbers differ by rounding only)
IDENTITY_IGNORES = (
    ("train", "out_dir"),
    ("train", "progress"),
    ("train", "log_every"),
    ("train", "device"),
    ("train", "checkpoint_every"),
)


def run_key(cfg: Config) -> str:
    """The identity of a run: the first 16 hex digits of the SHA-256 of its resolved config as sorted
    JSON, without :data:`IDENTITY_IGNORES`, plus the generator's :data:`SCENES_VERSION` for ShadedScenes
    data. Two configs that train the same thing on the same data share the key."""
    raw = cfg.to_dict()
    for section, key in IDENTITY_IGNORES:
        raw.get(section, {}).pop(key, None)
    if cfg.data.dataset in SCENES_DATASETS:
        raw["scenes_version"] = SCENES_VERSION
    return hashlib.sha256(json.dumps(raw, sort_keys=True, default=str).encode()).hexdigest()[:16]


@dataclass
class TrainedRun:
    """A trained run: the ``trainer`` (model with the selected weights available, splits, history) and
    its numbers. ``results`` and ``trivial`` are ``{domain: {task: {metric: value}}}`` on the test split."""

    trainer: Any
    results: dict[str, dict[str, dict[str, float]]]
    trivial: dict[str, dict[str, dict[str, float]]]
    seconds: float  # wall-clock time of the training
    epoch_seconds: float  # mean time of one epoch

    @property
    def history(self) -> Any:
        return self.trainer.history

    @property
    def best_epoch(self) -> int:
        return self.trainer.best_epoch

    def record(self) -> dict[str, Any]:
        """The JSON-ready numbers of the run (what the benchmark stores per run)."""
        return {
            "results": self.results,
            "trivial": self.trivial,
            "seconds": self.seconds,
            "epoch_seconds": self.epoch_seconds,
            "best_epoch": self.best_epoch,
        }


def train_and_evaluate(
    cfg: Config,
    domains: Sequence[str] | None = None,
    callbacks: Iterable[Any] = (),
    resume: bool = False,
    overwrite: bool = True,
) -> TrainedRun:
    """Train ``cfg``, select on validation, evaluate ``domains`` (test split) and the trivial predictors.

    Args:
        cfg: the run's config (its ``train.out_dir`` is where checkpoints go, if any).
        domains: test domains to evaluate (default ``cfg.data.eval_domains``); an empty list evaluates
            nothing, for callers that score the trained model themselves.
        callbacks: trainer callbacks (e.g. a gradient logger).
        resume: continue from ``<train.out_dir>/last.pt`` when it exists.
        overwrite: replace a finished run already in ``train.out_dir`` (else that is an error).
    """
    from coremtl_lite.train import Trainer

    trainer = Trainer(cfg, callbacks=list(callbacks))
    start = time.perf_counter()
    history = trainer.fit(resume=resume, overwrite=overwrite)
    seconds = time.perf_counter() - start
    domains = list(cfg.data.eval_domains if domains is None else domains)
    results = trainer.evaluate(domains=domains, split="test", use_best=True) if domains else {}
    trivial = trainer.evaluate_trivial(domains=domains) if domains else {}
    epoch_times = [e["seconds"] for e in history.epochs if "seconds" in e]
    epoch_seconds = sum(epoch_times) / len(epoch_times) if epoch_times else seconds / cfg.optim.epochs
    return TrainedRun(trainer, results, trivial, seconds, epoch_seconds)
