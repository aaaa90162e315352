"""The one training loop of coremtl_lite, for every model, objective and multi-task method.

One step (:meth:`Trainer.train_step`; CONTRIBUTING.md contracts; the loop never looks at a method's
or model's name), phase by phase::

    lr = base_lr * lr_factor(step)                            # 1. learning rate: warm-up + cosine (Appendix F)
    out = objective(model, batch, progress, generator)       # 2. forward + objective: task losses, Eq. 16 extras
    every train.grad_log_every steps: each term's gradient norm on the shared encoder (and its cap)
    check that every loss is finite                           # 3. finiteness check, before any update
    if out.train_tasks:                                      # 4. method.backward (after stage 0)
        method.backward(out.task_losses, shared_params=model.shared_parameters(),
                        features=out.outputs["features"], extra_loss=out.extra_loss)   # fills .grad
    else:                                                    #    stage 0: the decomposition only
        out.extra_loss.backward()
    all-reduce gradients over ranks; clip (Appendix F: norm 10) # 5. sync and clip
    AdamW step                                                # 6. optimiser step

Mixed precision (CUDA only: autocast, fp16 gradient scaling) lives in :mod:`.precision`. Each
synthetic scene is rendered only once (:mod:`coremtl_lite.data.cache`), and with ``prefetch > 0``
the batches are rendered ahead in a background thread (:mod:`coremtl_lite.data.prefetch`); neither
changes a number.

``progress`` = step / total_steps drives the objective's staged schedule (stage 0, lambda_ind ramp,
CFA start; :mod:`coremtl_lite.losses.objective`), so the stages keep their proportions whatever the
number of epochs. Around the step: ``method.on_epoch_end(mean task losses)``, the optional
held-out hook of bi-level methods (``method.uses_validation_batch`` -> ``method.meta_step``),
evaluation on the validation split (model selection) and on every test domain of
``cfg.data.eval_domains``, atomic checkpoints with exact resume, a non-finite-loss guard, progress
bars, a metric :class:`History` and callbacks.

**Trivial predictors and model selection.** At start the trainer fits the trivial predictors of
the tasks on the training split (:mod:`coremtl_lite.models.trivial`: majority class, mean depth,
mean normal, ...). Their statistics initialise the heads of the model it builds where the data is;
:meth:`Trainer.evaluate_trivial` scores them with the same meters. Model selection uses Δm% on the
validation split *against the trivial predictors* (``score``: positive = better than predicting the
constants), a fixed reference, so scores are comparable between runs on the same data.

Callbacks are plain objects with any of ``on_fit_start(trainer)``, ``on_step_end(trainer, record)``
(``record`` is the step's history dict: ``step``, ``epoch``, ``lr``, ``loss/...``),
``on_epoch_end(trainer, history)`` and ``on_fit_end(trainer, history)``. Setting
``trainer.should_stop = True`` ends the run after the current step.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import json
import math
import time
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, cast

import torch
from torch import Tensor, nn

from coremtl_lite.config import Config, ConfigError
from coremtl_lite.data.cache import DEFAULT_CACHE_BYTES, CacheBudget
from coremtl_lite.data.prefetch import DEFAULT_PREFETCH, ahead
from coremtl_lite.protocols import BatchDataset, MultiTaskModel, Stateful
from coremtl_lite.runtime import compile_unavailable, get_device, keep_freed_memory, seed_everything
from coremtl_lite.train.checkpoint import (
    CheckpointError,
    atomic_write,
    check_fields,
    check_finite_model,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    selectable,
    set_rng_state,
)
from coremtl_lite.train.distributed import (
    DistContext,
    all_reduce_gradients,
    all_reduce_sum,
    average_float_buffers,
    broadcast_module,
    convert_batchnorm,
    init_distributed,
)
from coremtl_lite.train.evaluation import Results, evaluate_datasets, relative_score, to_device
from coremtl_lite.train.grad_log import term_gradient_stats
from coremtl_lite.train.history import History
from coremtl_lite.train.precision import Precision
from coremtl_lite.train.run_dir import RunLock, describe_mismatch, resume_mismatch
from coremtl_lite.train.schedule import lr_factor

LAST = "last.pt"
BEST = "best.pt"
TRIVIAL_SAMPLES = 2048  # training samples read to fit the trivial predictors


class NonFiniteLossError(FloatingPointError):
    """A loss (or, without a gradient scaler, the gradient norm) became NaN or infinite.

    The run stops before the optimiser step; the last checkpoint on disk is left untouched.
    """

    def __init__(self, message: str, step: int, epoch: int, values: dict[str, float]):
        super().__init__(message)
        self.step, self.epoch, self.values = step, epoch, values


class Trainer:
    """Train ``cfg`` with the one loop; see the module docstring.

    Args:
        cfg: the run's :class:`~coremtl_lite.config.Config`.
        callbacks: objects with optional ``on_fit_start``/``on_step_end``/``on_epoch_end``/``on_fit_end``.
        model: a ready model to train instead of ``build_model(cfg.model, tasks)`` (same contract).
        objective: a ready objective instead of ``build_objective(cfg.loss, tasks)`` (same contract).
        cache_bytes: memory budget of the render-once cache of the synthetic datasets, all of them together
            (:mod:`coremtl_lite.data.cache`); 0 disables the cache.
        prefetch: batches rendered ahead in a background thread (:mod:`coremtl_lite.data.prefetch`; the
            same batches in the same order); 0 (the default) renders them in the loop -- on a small CPU
            the background thread slows the step down more than it saves.

    Attributes a notebook or callback may read: ``model``, ``tasks``, ``objective``, ``method``,
    ``optimizer``, ``splits``, ``history``, ``epoch`` (epochs completed), ``step`` (optimiser steps
    done), ``best_epoch``/``best_score`` (model selection on the validation split), ``device``, ``dist``,
    ``precision`` (:class:`~coremtl_lite.train.precision.Precision`), ``cache`` (the render-once cache's
    :class:`~coremtl_lite.data.cache.CacheBudget`).

    Set-up, in this order (each a small builder below): device and data parallelism, datasets (behind
    the render-once cache), tasks, model and trivial predictors, objective, method, optimiser,
    mixed precision, loaders.
    """

    def __init__(
        self,
        cfg: Config,
        callbacks: Iterable[Any] = (),
        model: nn.Module | None = None,
        objective: Any = None,
        cache_bytes: int = DEFAULT_CACHE_BYTES,
        prefetch: int = DEFAULT_PREFETCH,
    ):
        self.cfg = cfg.validate()
        keep_freed_memory()  # no page faults on the memory every step frees and allocates again
        self.device, self.dist = self._build_device()
        self.callbacks = list(callbacks)
        self.should_stop = False
        self.out_dir = Path(cfg.train.out_dir)
        self.generator = seed_everything(
            cfg.train.seed
        )  # the objective's randomness (CFA draws); checkpointed
        self.cache = CacheBudget(cache_bytes)  # the render-once cache's memory, for all datasets together
        self.prefetch = int(prefetch)
        self.splits = self._build_splits()
        from coremtl_lite.tasks import tasks_from_info

        self.tasks = tasks_from_info(self.splits.train.task_info, cfg.data.tasks)
        self.task_names = [t.name for t in self.tasks]
        # NHWC on CUDA and on the CPU (there a step of the cpu profile is 1.1-1.3x faster than in NCHW:
        # mkldnn's 1x1 and depthwise convolution backward passes are much faster channels-last)
        self.channels_last = self.device.type in ("cuda", "cpu") and cfg.train.channels_last
        self.model, self.trivial = self._build_model(model)
        self.objective = self._build_objective(objective)
        self.method = self._build_method()
        self.optimizer, self.params = self._build_optimizer()
        self.precision = Precision(self.device, cfg.train.amp)  # CUDA only: bf16, or fp16 with a scaler
        self.train_loader, self._val_loader = self._build_loaders()
        self.steps_per_epoch = len(self.train_loader)
        if cfg.train.max_steps_per_epoch:
            self.steps_per_epoch = min(self.steps_per_epoch, cfg.train.max_steps_per_epoch)
        self.total_steps = cfg.optim.epochs * self.steps_per_epoch
        self.warmup_steps = cfg.optim.warmup_epochs * self.steps_per_epoch

        self.history = History()
        self.epoch = 0
        self.step = 0
        self.best_epoch: int | None = None
        self.best_score = -math.inf
        self._best_state: dict[str, Tensor] | None = None
        self._val_reference: dict[str, dict[str, float]] | None = None
        self.term_scales: dict[str, float] = {}  # the extra terms' gradient caps (loss.max_term_grad_ratio)

    # ------------------------------------------------------------------------------------ set-up
    def _build_device(self) -> tuple[torch.device, DistContext]:
        """The device of this process and the data-parallel context (one process without ``torchrun``)."""
        device = get_device(self.cfg.train.device)
        dist = init_distributed(device.type)
        if dist.enabled and device.type == "cuda":
            device = torch.device("cuda", dist.local_rank)
        return device, dist

    def _build_splits(self) -> Any:
        """Train/val/test datasets of ``cfg.data``, each behind the render-once cache when it fits
        (:mod:`coremtl_lite.data.cache`)."""
        from coremtl_lite.data import build_splits

        splits = build_splits(self.cfg.data, self.cfg.train.seed)
        cache = self.cache  # one budget for all of them: training split first, then validation, then test
        return type(splits)(
            cache.wrap(splits.train),
            cache.wrap(splits.val),
            {d: cache.wrap(ds) for d, ds in splits.test.items()},
        )

    def _build_model(self, model: nn.Module | None) -> tuple[nn.Module, nn.Module]:
        """The model (``build_model(cfg.model, tasks)`` unless one is given) on the device, and the trivial
        predictors fitted on the training split, whose statistics start a built model's heads."""
        from coremtl_lite.data import make_loader
        from coremtl_lite.models.heads import init_heads_from_data
        from coremtl_lite.models.trivial import fit_trivial

        cfg = self.cfg
        built_here = model is None
        if model is None:
            from coremtl_lite.models import build_model

            model = build_model(
                cfg.model, self.tasks, input_shape=getattr(self.splits.train, "input_shape", None)
            )
        # fitted after the model is built, so the model's random init does not depend on them
        trivial = fit_trivial(
            make_loader(self.splits.train, cfg.data.batch_size, shuffle=False, seed=cfg.train.seed),
            self.tasks,
            max_samples=TRIVIAL_SAMPLES,
        ).to(self.device)
        heads = getattr(model, "heads", None)
        if built_here and isinstance(heads, nn.ModuleDict):
            init_heads_from_data(heads, {t.name: t.kind for t in self.tasks}, trivial.stats)
        if self.dist.enabled:
            model = convert_batchnorm(model, self.device.type)
        model = model.to(self.device)
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        broadcast_module(model)
        if cfg.train.compile:
            why_not = compile_unavailable(self.device)
            if why_not is None:
                model.compile()  # in place: state_dict keys and model methods unchanged
            else:  # eager: the same numbers up to float rounding, only slower
                warnings.warn(
                    f"train.compile=true ignored, the model runs eagerly: {why_not}",
                    RuntimeWarning,
                    stacklevel=3,
                )
        return model, trivial

    def _build_objective(self, objective: Any) -> Any:
        """The objective (Eq. 16; ``build_objective(cfg.loss, tasks)`` unless one is given), on the device."""
        if objective is None:
            from coremtl_lite.losses import build_objective

            objective = build_objective(self.cfg.loss, self.tasks)
        if isinstance(objective, nn.Module):
            objective.to(self.device)
        return objective

    def _build_method(self) -> Any:
        """The multi-task method of ``train.method`` with ``train.method_options``, from the registry."""
        from coremtl_lite.methods import build_method

        tc = self.cfg.train
        try:
            return build_method(tc.method, self.task_names, **tc.method_options).to(self.device)
        except ConfigError as err:  # an unknown option or a value of the wrong type: the message names both
            raise ConfigError(f"train.method_options: {err}") from None
        except (TypeError, ValueError) as err:  # a value the method's constructor refuses
            raise ConfigError(
                f"train.method_options={tc.method_options} do not fit method {tc.method!r}: {err}"
            ) from err

    def _build_optimizer(self) -> tuple[torch.optim.Optimizer, list[nn.Parameter]]:
        """AdamW over the model (weight decay ``optim.weight_decay``) and the method's and objective's own
        weights (no decay); returns it and the flat list of its parameters."""
        groups: list[dict[str, Any]] = [
            {"params": list(self.model.parameters()), "weight_decay": self.cfg.optim.weight_decay}
        ]
        method_params = [p for p in self.method.parameters() if p.requires_grad]
        objective_params = (
            [p for p in self.objective.parameters() if p.requires_grad]
            if isinstance(self.objective, nn.Module)
            else []
        )
        if method_params or objective_params:  # the method's own weights (e.g. UW's log-variances): no decay
            groups.append({"params": method_params + objective_params, "weight_decay": 0.0})
        # foreach: multi-tensor kernels over all parameters instead of a Python loop over them (the same
        # numbers, bit-identical on CPU: tests/test_train.py; CUDA's default already); small models gain.
        # Not fused=True: with torch 2.14 on the CPU a fused step pairs parameter and gradient entries by
        # memory position, so a channels-last weight with a default-layout gradient is updated with the
        # wrong entries (0.009 from foreach after 5 steps at lr 1e-3; CUDA raises an error for such a pair:
        # pytorch/pytorch#110758)
        optimizer = torch.optim.AdamW(groups, lr=self.cfg.optim.lr, foreach=True)
        return optimizer, [p for g in groups for p in g["params"]]

    def _build_loaders(self) -> tuple[Any, Any]:
        """The training loader (shuffled per epoch, this rank's slice) and, for bi-level methods, the
        validation loader of their held-out batches (else None)."""
        from coremtl_lite.data import flip_batch, make_loader

        cfg, dist = self.cfg, self.dist
        n_train = len(self.splits.train)
        train = make_loader(
            self.splits.train,
            cfg.data.batch_size,
            shuffle=True,
            seed=cfg.train.seed,
            drop_last=n_train >= cfg.data.batch_size,
            rank=dist.rank,
            world_size=dist.world_size,
            num_workers=cfg.data.num_workers,
            transform=flip_batch if cfg.data.augment else None,
        )
        if len(train) == 0:
            raise ValueError(
                f"the training set ({n_train} samples) gives no batch of data.batch_size="
                f"{cfg.data.batch_size} on {dist.world_size} process(es)"
            )
        val = None
        if self.method.uses_validation_batch:  # the held-out hook of bi-level methods (methods/base.py)
            val = make_loader(
                self.splits.val,
                cfg.data.batch_size,
                shuffle=True,
                seed=cfg.train.seed + 1,
                rank=dist.rank,
                world_size=dist.world_size,
            )
            if len(val) == 0:
                raise ValueError("the method needs validation batches but the validation split gives none")
        return train, val

    # ------------------------------------------------------------------------------------ helpers
    @property
    def is_main(self) -> bool:
        return self.dist.is_main

    def autocast(self) -> contextlib.AbstractContextManager:
        """The mixed-precision context of this run (a no-op off CUDA or with ``train.amp=false``)."""
        return self.precision.autocast()

    def directions(self) -> dict[str, dict[str, bool]]:
        """``{task: {metric: higher_is_better}}`` of the run's tasks."""
        return {t.name: dict(t.directions) for t in self.tasks}

    def _call(self, hook: str, *args: Any) -> None:
        for cb in self.callbacks:
            fn = getattr(cb, hook, None)
            if fn is not None:
                fn(self, *args)

    def _batch_at(self, loader: Any, index: int) -> dict:
        """Batch ``index`` of a loader's current epoch, rendered alone (the held-out hook's cycling batches)."""
        from torch.utils.data import default_collate

        ids = loader.rank_batches()[index]
        ds = loader.dataset
        return ds.get_batch(ids) if isinstance(ds, BatchDataset) else default_collate([ds[i] for i in ids])

    def _val_batch(self, step: int) -> dict:
        """The held-out batch of a step: a pure function of the step, so resume replays it exactly."""
        n = len(self._val_loader)
        self._val_loader.set_epoch(step // n)
        return to_device(self._batch_at(self._val_loader, step % n), self.device, self.channels_last)

    def _heldout_loss_fn(self, epoch: int):
        """``loss_fn(batch, return_outputs=False)`` for ``method.meta_step``: the weighted task losses
        (lambda_t L_t, Eq. 16) of the model as it is now, without the objective's extra terms."""
        weights = self.cfg.loss.task_weights

        def loss_fn(batch: dict, return_outputs: bool = False):
            with self.autocast():
                outputs = self.model(batch["image"])
                losses = {
                    t.name: weights.get(t.name, 1.0) * t.loss(outputs["preds"][t.name], batch[t.name])
                    for t in self.tasks
                }
            return (losses, outputs) if return_outputs else losses

        return loss_fn

    # ------------------------------------------------------------------------------------ training
    def fit(self, resume: bool = False, stop_at_epoch: int | None = None, overwrite: bool = True) -> History:
        """Train until ``optim.epochs`` (or ``stop_at_epoch`` epochs in total, with the schedule still
        spanning ``optim.epochs``); return the :class:`History`.

        ``resume=True`` first loads ``<train.out_dir>/last.pt`` when it exists (see :meth:`resume`).
        The run folder is locked while training (``train/run_dir.py``); ``config.json`` is written when
        the run starts. A folder that already holds another run is replaced when ``overwrite`` (the
        default of the Python API, where notebooks re-run cells) and refused otherwise (the command
        line without ``--overwrite``). Raises :class:`NonFiniteLossError` when a loss turns NaN/inf and
        :class:`~coremtl_lite.train.checkpoint.NonFiniteStateError` when the weights diverge; no
        checkpoint is written then.
        """
        lock = self._claim_run_dir(resume, overwrite)
        try:
            return self._fit(resume, stop_at_epoch)
        finally:
            if lock is not None:
                lock.release()

    def _claim_run_dir(self, resume: bool, overwrite: bool) -> RunLock | None:
        """Lock ``train.out_dir`` (rank 0), refuse or clear an earlier run there, write ``config.json``."""
        if not self.is_main or not self.cfg.train.checkpoint_every:
            return None
        lock = RunLock(self.out_dir)
        ours = self.step > 0 or self.epoch > 0  # this trainer already trained there: continuing its own run
        lock.claim(resume=resume or ours, overwrite=overwrite)
        return lock

    def _fit(self, resume: bool, stop_at_epoch: int | None) -> History:
        if resume and (self.out_dir / LAST).is_file():
            self.resume(self.out_dir / LAST)  # refuses a checkpoint of another experiment
        if (
            self.is_main and self.cfg.train.checkpoint_every
        ):  # the run's config (and history), as soon as it starts
            atomic_write(
                self.out_dir / "config.json",
                lambda fh: fh.write(json.dumps(self.cfg.to_dict(), indent=2).encode()),
            )
            if self.history.epochs:  # a kill between last.pt and history.json left the older history
                atomic_write(
                    self.out_dir / "history.json", lambda fh: fh.write(self.history.to_json().encode())
                )
        from tqdm.auto import tqdm

        end = self.cfg.optim.epochs if stop_at_epoch is None else min(stop_at_epoch, self.cfg.optim.epochs)
        self.should_stop = False
        self._call("on_fit_start")
        bar = tqdm(
            total=self.cfg.optim.epochs,
            initial=self.epoch,
            desc="epochs",
            unit="epoch",
            disable=not (self.cfg.train.progress and self.is_main),
        )
        try:
            while self.epoch < end and not self.should_stop:
                self._train_epoch()
                rec = self.history.epochs[-1]
                post = {"train": f"{rec['train/total']:.4f}"}
                if "score" in rec:
                    post["val Δm%"] = f"{rec['score']:+.2f}"
                bar.set_postfix(post)
                bar.update(1)
        finally:
            bar.close()
        self._call("on_fit_end", self.history)
        return self.history

    def _train_epoch(self) -> None:
        from tqdm.auto import tqdm

        cfg, epoch = self.cfg, self.epoch
        start = time.perf_counter()
        self.model.train()
        self.train_loader.set_epoch(epoch)
        loss_fn = self._heldout_loss_fn(epoch) if self._val_loader is not None else None
        sums = torch.zeros(len(self.tasks) + 1, dtype=torch.float64)
        n_steps = 0
        bar = tqdm(
            total=self.steps_per_epoch,
            desc=f"epoch {epoch + 1}/{cfg.optim.epochs}",
            leave=False,
            unit="step",
            disable=not (cfg.train.progress and self.is_main),
        )
        # the epoch's batches (with prefetch > 0 rendered ahead in a background thread: the same batches)
        batches = ahead(itertools.islice(self.train_loader, self.steps_per_epoch), self.prefetch)
        try:
            for batch in batches:
                record = self.train_step(to_device(batch, self.device, self.channels_last), epoch, loss_fn)
                sums += torch.tensor(
                    [record[f"loss/{t}"] for t in self.task_names] + [record["loss/total"]],
                    dtype=torch.float64,
                )
                n_steps += 1
                bar.update(1)
                if n_steps % cfg.train.log_every == 0 or n_steps == self.steps_per_epoch:
                    bar.set_postfix(loss=f"{record['loss/total']:.4f}", lr=f"{record['lr']:.2e}")
                self._call("on_step_end", record)
                if self.should_stop:
                    break
        finally:
            batches.close()  # stops the rendering thread
            bar.close()
        means = {t: float(sums[k] / max(n_steps, 1)) for k, t in enumerate(self.task_names)}
        self.method.on_epoch_end(means)  # e.g. DWA's loss ratios (already averaged over ranks)
        self.epoch = epoch + 1
        rec: dict[str, Any] = {
            "epoch": self.epoch,
            "steps": n_steps,
            "lr": self.optimizer.param_groups[0]["lr"],
            **{f"train/{t}": v for t, v in means.items()},
            "train/total": float(sums[-1] / max(n_steps, 1)),
        }
        every = cfg.train.eval_every
        if every and (self.epoch % every == 0 or self.epoch == cfg.optim.epochs):
            self._evaluate_epoch(rec)
        rec["seconds"] = time.perf_counter() - start
        self.history.epochs.append(rec)
        ck = cfg.train.checkpoint_every
        if ck and (self.epoch % ck == 0 or self.epoch == cfg.optim.epochs or self.should_stop):
            self.save(self.out_dir / LAST)
        self._call("on_epoch_end", self.history)

    def train_step(self, batch: dict, epoch: int, loss_fn=None) -> dict[str, Any]:
        """One optimisation step on ``batch`` (already on the device); returns its record (also appended
        to the history). The phases are those of the module docstring; ``loss_fn`` is the held-out
        loss of bi-level methods (``method.meta_step``; None for the others)."""
        # 1. learning rate
        record: dict[str, Any] = {"step": self.step, "epoch": epoch, "lr": self._set_learning_rate()}
        self.optimizer.zero_grad(set_to_none=True)
        if loss_fn is not None:  # bi-level methods: the generic held-out hook (methods/base.py)
            meta = self.method.meta_step(loss_fn, batch, self._val_batch(self.step), self.params)
            record.update({f"method/{k}": float(v) for k, v in (meta or {}).items()})
        out = self._forward(batch)  # 2. forward + objective (Eq. 16)
        if self.cfg.train.grad_log_every and self.step % self.cfg.train.grad_log_every == 0:
            record.update(self._measure_terms(out))  # each term's gradient on the encoder; their caps
        out = self._scale_extra_terms(out)
        losses = self._finite_losses(out, epoch)  # 3. finiteness check (raises before any update)
        method_logs = self._backward(out)  # 4. method.backward fills .grad
        norm = self._sync_and_clip(epoch)  # 5. all-reduce over ranks, clip at optim.grad_clip
        self._optimizer_step()  # 6. AdamW
        record.update(losses)
        record["loss/total"] = sum(losses.values())
        record["grad_norm"] = norm
        record.update({f"obj/{k}": float(v) for k, v in (out.logs or {}).items()})
        record.update({f"method/{k}": float(v) for k, v in (method_logs or {}).items()})
        self.step += 1
        self.history.steps.append(record)
        return record

    def _forward(self, batch: dict) -> Any:
        """The objective's terms for ``batch`` at the current point of the schedule (``progress`` =
        step / total_steps), under the run's autocast."""
        progress = self.step / max(self.total_steps, 1)
        with self.autocast():
            return self.objective(self.model, batch, progress, self.generator)

    def _measure_terms(self, out: Any) -> dict[str, float]:
        """Measure each term's gradient on the shared encoder, update the extra terms' caps from it and
        return both as ``grad/...`` record entries."""
        stats = self._term_gradients(out)
        self._update_term_scales(stats, out.extra_terms)
        return {
            **{f"grad/{k}": v for k, v in stats.items()},
            **{f"grad/{k}_scale": v for k, v in self.term_scales.items()},
        }

    def _set_learning_rate(self) -> float:
        """Linear warm-up + cosine decay (Appendix F) at the current step."""
        o = self.cfg.optim
        lr = o.lr * lr_factor(self.step, self.total_steps, self.warmup_steps, o.min_lr_ratio)
        for g in self.optimizer.param_groups:
            g["lr"] = lr
        return lr

    def _finite_losses(self, out: Any, epoch: int) -> dict[str, float]:
        """The step's loss values (global-batch means under data parallelism) as ``{"loss/<task>",
        "loss/extra"}``; raises :class:`NonFiniteLossError` when one is NaN or infinite."""
        missing = [t for t in self.task_names if t not in out.task_losses]
        if missing:
            raise KeyError(
                f"the objective returned no loss for tasks {missing}; got {sorted(out.task_losses)}"
            )
        values = torch.stack(
            [out.task_losses[t].detach().float().reshape(()) for t in self.task_names]
            + [
                out.extra_loss.detach().float().reshape(())
                if out.extra_loss is not None
                else torch.zeros((), device=self.device)
            ]
        )
        if self.dist.enabled:  # log the global-batch mean; every rank takes the same NaN decision
            values = all_reduce_sum(values) / self.dist.world_size
        values = values.cpu().double()
        named = {
            **{f"loss/{t}": float(values[k]) for k, t in enumerate(self.task_names)},
            "loss/extra": float(values[-1]),
        }
        if not torch.isfinite(values).all():
            bad = [k for k, v in named.items() if not math.isfinite(v)]
            raise NonFiniteLossError(
                f"non-finite loss at step {self.step} (epoch {epoch + 1}): {', '.join(bad)} = "
                f"{[named[k] for k in bad]}; training stopped, the last checkpoint in {str(self.out_dir)!r} "
                "is untouched. Lower optim.lr or check the data/targets.",
                self.step,
                epoch,
                named,
            )
        return named

    def _term_gradients(self, out: Any) -> dict[str, float]:
        """Each term's gradient norm on the shared parameters, its cosine with the task gradient and its
        share (``<term>_norm``, ``<term>_cos``, ``<term>_share``; :mod:`coremtl_lite.train.grad_log`)."""
        terms: dict[str, Tensor] = {}
        if out.train_tasks:
            terms["task"] = sum(out.task_losses.values())
        terms.update(out.extra_terms)
        return term_gradient_stats(terms, self._shared_parameters(), reference="task")

    def _update_term_scales(self, stats: dict[str, float], extra_terms: dict[str, Tensor]) -> None:
        """s_k = min(1, loss.max_term_grad_ratio x ||g_task|| / ||g_k||) for each extra term measured with the
        tasks (see :class:`coremtl_lite.config.LossConfig`); kept until the next measurement.

        Under data parallelism each rank caps its own terms against its own task gradient (the terms
        present can differ between ranks, e.g. CFA's gate is per batch), and checkpoints keep rank 0's
        scales."""
        ratio, task = self.cfg.loss.max_term_grad_ratio, stats.get("task_norm", 0.0)
        if ratio <= 0 or not (task > 0 and math.isfinite(task)):
            return
        for name in extra_terms:
            norm = stats.get(f"{name}_norm", 0.0)
            if math.isfinite(norm):
                self.term_scales[name] = min(1.0, ratio * task / norm) if norm > 0 else 1.0

    def _scale_extra_terms(self, out: Any) -> Any:
        """``out`` with ``extra_loss`` rebuilt from its terms times their scales (unchanged without scales)."""
        if not self.term_scales or not out.extra_terms:
            return out
        extra = sum(self.term_scales.get(k, 1.0) * v for k, v in out.extra_terms.items())
        return dataclasses.replace(out, extra_loss=extra)

    def _shared_parameters(self) -> list[nn.Parameter]:
        """The parameters every task shares (``shared_parameters()`` of :class:`~coremtl_lite.protocols.MultiTaskModel`)."""
        return cast(MultiTaskModel, self.model).shared_parameters()

    def _backward(self, out: Any) -> dict[str, float] | None:
        """Fill ``.grad``: the method after stage 0, the decomposition loss alone in stage 0. Under fp16
        the gradients (not the loss values the method reads) are scaled (:mod:`.precision`)."""
        task_losses, extra = self.precision.scale_losses(dict(out.task_losses), out.extra_loss)
        if not out.train_tasks:  # stage 0: no task gradient reaches the encoder
            if extra is not None:
                extra.backward()
            return None
        features = out.outputs.get("features") if isinstance(out.outputs, dict) else None
        return self.method.backward(
            task_losses, shared_params=self._shared_parameters(), features=features, extra_loss=extra
        )

    def _sync_and_clip(self, epoch: int) -> float:
        """All-reduce the gradients over ranks and clip them (Appendix F: norm 10); returns the gradient
        norm before clipping. Without a gradient scaler a non-finite norm stops the run here."""
        all_reduce_gradients(self.params)  # data parallelism: average over ranks (train/distributed.py)
        average_float_buffers(self.method)  # keep per-rank method state (e.g. meta-learned weights) in sync
        self.precision.unscale(self.optimizer)
        with_grad = [p for p in self.params if p.grad is not None]
        if self.cfg.optim.grad_clip > 0 and with_grad:
            norm = torch.nn.utils.clip_grad_norm_(
                with_grad, self.cfg.optim.grad_clip
            )  # Appendix F: clip at 10
        else:
            norm = (
                torch.linalg.vector_norm(
                    torch.stack([p.grad.detach().float().norm() for p in with_grad if p.grad is not None])
                )
                if with_grad
                else torch.zeros(())
            )
        grad_norm = float(norm)
        if self.precision.scaler is None and not math.isfinite(grad_norm):  # a scaler skips such steps itself
            raise NonFiniteLossError(
                f"non-finite gradient norm at step {self.step} (epoch {epoch + 1}); training stopped, the "
                f"last checkpoint in {str(self.out_dir)!r} is untouched.",
                self.step,
                epoch,
                {"grad_norm": grad_norm},
            )
        return grad_norm

    def _optimizer_step(self) -> None:
        """The AdamW step (with an fp16 scaler: skipped when the scaled gradients overflowed)."""
        self.precision.step(self.optimizer)

    # ---------------------------------------------------------------------------------- evaluation
    def _datasets(self, split: str, domains: Sequence[str] | None) -> dict[str, Any]:
        if split == "val":
            return {"val": self.splits.val}
        if split != "test":
            raise ValueError(f"split must be 'val' or 'test', got {split!r}")
        domains = list(domains) if domains is not None else list(self.cfg.data.eval_domains)
        out = {}
        missing = [d for d in domains if d not in self.splits.test]
        if missing:  # domains outside cfg.data.eval_domains: build their test sets on demand
            from coremtl_lite.data import build_splits

            extra = build_splits(
                dataclasses.replace(self.cfg.data, eval_domains=tuple(missing)), self.cfg.train.seed
            ).test
            self.splits.test.update({d: self.cache.wrap(ds) for d, ds in extra.items()})
        for d in domains:
            out[d] = self.splits.test[d]
        return out

    def evaluate(
        self, domains: Sequence[str] | None = None, split: str = "test", use_best: bool = True
    ) -> Results:
        """``{domain: {task: {metric: value}}}`` on the test split of ``domains`` (default
        ``cfg.data.eval_domains``), or ``{"val": ...}`` with ``split="val"``.

        ``use_best=True`` evaluates the weights selected on the validation split (when a validation
        evaluation happened), else the current weights. Under data parallelism every rank gets the
        numbers of the whole set.
        """
        datasets = self._datasets(split, domains)
        with self._weights(use_best):
            return evaluate_datasets(
                self.model,
                self.tasks,
                datasets,
                self.cfg.data.batch_size,
                self.device,
                ctx=self.dist,
                seed=self.cfg.train.seed,
                autocast=self.autocast,
                channels_last=self.channels_last,
                prefetch=self.prefetch,
            )

    def evaluate_trivial(self, domains: Sequence[str] | None = None, split: str = "test") -> Results:
        """The trivial predictors' results (majority class, mean depth, mean normal, ... fitted on the
        training split; :mod:`coremtl_lite.models.trivial`), in the format of :meth:`evaluate`."""
        return evaluate_datasets(
            self.trivial,
            self.tasks,
            self._datasets(split, domains),
            self.cfg.data.batch_size,
            self.device,
            ctx=self.dist,
            seed=self.cfg.train.seed,
            prefetch=self.prefetch,
        )

    def load_selected_weights(self) -> nn.Module:
        """Put the weights selected on the validation split (the best epoch) into ``self.model`` and
        return it; a no-op when no validation ran. For diagnostics that need the model itself (saliency,
        probes) rather than :meth:`evaluate`. Training on afterwards continues from these weights."""
        if self._best_state is not None and self.best_epoch != self.epoch:
            self.model.load_state_dict(self._best_state)
        return self.model

    @contextlib.contextmanager
    def _weights(self, use_best: bool):
        if not use_best or self._best_state is None or self.best_epoch == self.epoch:
            yield
            return
        current = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        self.model.load_state_dict(self._best_state)
        try:
            yield
        finally:
            self.model.load_state_dict(current)

    def _evaluate_epoch(self, rec: dict[str, Any]) -> None:
        """Validation (model selection: Δm% against the trivial predictors) and every test domain."""
        # a diverged model (NaN/inf or absurdly large weights) stops the run here, before it can become
        # best.pt or last.pt: the checkpoints on disk keep the last good weights
        check_finite_model(self.model.state_dict(), f"epoch {self.epoch} to {str(self.out_dir)!r}")
        val = self.evaluate(split="val", use_best=False)["val"]
        if self._val_reference is None:  # a fixed reference: the trivial predictors on the validation split
            self._val_reference = self.evaluate_trivial(split="val")["val"]
        score = relative_score(val, self._val_reference, self.directions())
        rec["val"], rec["score"] = val, score
        if score > self.best_score and selectable(score, val):  # a non-finite score never becomes best
            self.best_score, self.best_epoch = score, self.epoch
            self._best_state = {
                k: v.detach().to("cpu", copy=True) for k, v in self.model.state_dict().items()
            }
            if self.cfg.train.checkpoint_every and self.is_main:
                save_checkpoint(
                    self.out_dir / BEST,
                    {
                        "model": self._best_state,
                        "epoch": self.epoch,
                        "score": score,
                        "config": json.dumps(self.cfg.to_dict()),
                    },
                )
        if self.cfg.data.eval_domains:
            rec["test"] = self.evaluate(split="test", use_best=False)

    # ------------------------------------------------------------------------------- checkpoints
    def state_dict(self) -> dict[str, Any]:
        """Everything exact resume needs (tensors and plain containers only)."""
        state = {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "method": self.method.state_dict(),
            "generator": self.generator.get_state(),
            "rng": rng_state(),
            "epoch": self.epoch,
            "step": self.step,
            "history": self.history.to_dict(),
            "best_epoch": -1 if self.best_epoch is None else self.best_epoch,
            "best_score": self.best_score,
            "val_reference": self._val_reference,
            "term_scales": dict(self.term_scales),
            "config": json.dumps(self.cfg.to_dict()),
            "world_size": self.dist.world_size,
        }
        if isinstance(self.objective, Stateful):
            state["objective"] = self.objective.state_dict()
        if self.precision.scaler is not None:
            state["scaler"] = self.precision.scaler.state_dict()
        return state

    def save(self, path: str | Path | None = None) -> Path:
        """Atomically write a full checkpoint (rank 0 only; other ranks return the path)."""
        path = Path(path) if path is not None else self.out_dir / LAST
        if self.is_main:
            save_checkpoint(path, self.state_dict())
            atomic_write(path.parent / "history.json", lambda fh: fh.write(self.history.to_json().encode()))
        return path

    def resume(self, path: str | Path) -> Trainer:
        """Load a checkpoint written by :meth:`save` and continue exactly where it stopped: the same
        numbers as an uninterrupted run with the same seed (model, optimiser, method, objective, the
        objective's generator, Python/NumPy/torch RNGs, step, epoch, history, model selection)."""
        state = load_checkpoint(path, map_location="cpu")
        check_fields(state, path, self.cfg.optim.epochs)
        try:
            saved_cfg = json.loads(state["config"])
        except (KeyError, TypeError, ValueError) as err:
            raise CheckpointError(f"checkpoint {str(path)!r} holds no readable config: {err}") from err
        diff = resume_mismatch(saved_cfg, self.cfg.to_dict())  # every field that changes the numbers
        if diff:
            raise CheckpointError(describe_mismatch(path, diff))
        try:
            self.model.load_state_dict(state["model"])
            self.method.load_state_dict(state["method"])
            if "objective" in state and isinstance(self.objective, Stateful):
                self.objective.load_state_dict(state["objective"])
            self.optimizer.load_state_dict(state["optimizer"])
        except (RuntimeError, KeyError, ValueError) as err:
            raise CheckpointError(f"checkpoint {str(path)!r} does not fit this run: {err}") from err
        if self.precision.scaler is not None and "scaler" in state:
            self.precision.scaler.load_state_dict(state["scaler"])
        self.generator.set_state(state["generator"])
        set_rng_state(state["rng"])
        self.epoch, self.step = int(state["epoch"]), int(state["step"])
        self.history = History.from_dict(state["history"])
        self.best_epoch = None if state["best_epoch"] < 0 else int(state["best_epoch"])
        self.best_score = float(state["best_score"])
        self._val_reference = state["val_reference"]
        self.term_scales = {str(k): float(v) for k, v in state.get("term_scales", {}).items()}
        self._best_state = None
        best = Path(path).parent / BEST
        if self.best_epoch is not None and best.is_file():
            b = load_checkpoint(best)
            if int(b["epoch"]) == self.best_epoch:
                self._best_state = b["model"]
        return self

    @classmethod
    def from_checkpoint(cls, path: str | Path, overrides: Sequence[str] = (), **kwargs: Any) -> Trainer:
        """A trainer rebuilt from the config stored in a checkpoint (``last.pt`` or ``best.pt``) with its
        weights loaded; ``overrides`` (``section.key=value``) adjust e.g. ``train.device``."""
        from coremtl_lite.config import apply_overrides

        state = load_checkpoint(path)
        try:
            raw = json.loads(state["config"])
        except (KeyError, TypeError, ValueError) as err:
            raise CheckpointError(f"checkpoint {str(path)!r} holds no readable config: {err}") from err
        cfg = apply_overrides(Config.from_dict(raw), list(overrides))
        check_fields(state, path, cfg.optim.epochs)
        trainer = cls(cfg, **kwargs)
        if "optimizer" in state:
            trainer.resume(path)
        else:
            trainer.model.load_state_dict(state["model"])
            trainer.epoch = trainer.best_epoch = int(state["epoch"])
        return trainer
