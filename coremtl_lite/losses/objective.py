"""The CORE-MTL training objective (paper Eq. 16) and its staged schedule.

    L = sum_t lambda_t L_t  +  lambda_rec L_rec  +  lambda_ind(p) L_ind  +  lambda_cfa L_CFA     (Eq. 16)

* L_t: the task losses (:mod:`coremtl_lite.losses.task_losses`), weighted by ``loss.task_weights``.
* L_rec: the grounding loss of the decoder (Eq. 14 hard / Eq. 15 soft, :mod:`.reconstruction`).
* L_ind = linear CKA(pool(z_s), z_p) on the mini-batch (Eq. 11; z_s spatially averaged).
* L_CFA (Eq. 12): with probability ``cfa_prob`` per step (drawn from the trainer's generator), z_p is
  shuffled within the batch by a permutation from the same generator, the counterfactual image
  x~ = D(z_s, z_p[perm]) is decoded *without gradients* and re-encoded, the whole pass with every
  BatchNorm layer (decoder included) in eval mode -- running statistics used and untouched, each
  layer's mode restored afterwards (§3.3 "we freeze Batch Normalization statistics") -- and

  - ``cfa_form="consistency"`` (paper): ||z_s(x~) - z_s(x)||^2, as a *relative* mean squared error
    (divided by the detached mean square of z_s(x)) so that it cannot be lowered by shrinking z_s --
    the heads' BatchNorm would undo any rescaling, which would make the plain MSE a free direction;
  - ``cfa_form="task"`` (released code): sum_t lambda_t L_t(f_t(z_s(x~)), y_t), the task losses of the
    counterfactual predictions against the original labels.

Which terms exist is decided by capability, not by name: a model output with ``z_p`` gets L_ind; a
model with ``decode`` gets L_rec and L_CFA; a vanilla model gets ``extra_loss = None``.

**The staged schedule** (released configs), in terms of ``progress`` p = the fraction of the run's
optimiser steps already taken (the trainer passes ``step / total_steps``), with W =
``loss.decomposition_warmup``, R = ``loss.ind_ramp``, C = ``loss.cfa_start``:

* stage 0, p < W (models with a decoder only): the *decomposition* trains alone. The task losses are
  computed for the logs but with the heads in eval mode and without a graph, so no task gradient
  reaches the encoder and the heads are untouched (``ObjectiveOutput.train_tasks = False``: the
  trainer back-propagates ``extra_loss`` only). The released code does the same by multiplying the
  task losses by 0 in its stage 0. lambda_ind = 0.
* then lambda_ind(p) = lambda_ind * min(1, (p - W) / R) (R = 0: full weight at once);
* CFA may apply for p >= C, on batches whose reconstruction passes the bar of
  ``loss.cfa_max_rec_ratio`` (see :class:`coremtl_lite.config.LossConfig`): the decoder's squared
  error must be at most that fraction of the squared error of the trivial reconstruction, each
  image's own mean colour (``rec_ratio`` in the logs).

All losses are computed in float32 (AMP-safe). ``ObjectiveOutput.extra_terms`` holds the weighted
terms separately (``rec``, ``ind``, ``cfa``), so the trainer can measure each one's gradient on the
shared encoder.

Equation numbers are the CORE-MTL paper's; docs/method.md states each one (label ``eq-N``).
"""

from __future__ import annotations

import contextlib
import functools
import operator
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeGuard

import torch
from torch import Tensor, nn

from coremtl_lite.config import LossConfig
from coremtl_lite.losses.cka import linear_cka
from coremtl_lite.losses.reconstruction import PHYSICS_WEIGHTS, build_perceptual, reconstruction_loss
from coremtl_lite.protocols import GroundedModel
from coremtl_lite.runtime import as_floats

__all__ = [
    "Objective",
    "ObjectiveOutput",
    "build_objective",
    "cfa_loss",
    "eval_mode",
    "frozen_batchnorm",
    "independence_loss",
]


@dataclass
class ObjectiveOutput:
    """``task_losses`` {task: lambda_t L_t}, ``extra_loss`` (weighted L_rec + L_ind + L_CFA, or None),
    the model's ``outputs`` dict and float ``logs``.

    ``extra_terms`` are the weighted terms of ``extra_loss`` by name (they sum to it); ``train_tasks``
    is False in stage 0 of the schedule, when the task losses are values for the logs only (no graph)
    and only ``extra_loss`` is to be back-propagated.
    """

    task_losses: dict[str, Tensor]
    extra_loss: Tensor | None
    outputs: dict[str, Any]
    logs: dict[str, float] = field(default_factory=dict)
    extra_terms: dict[str, Tensor] = field(default_factory=dict)
    train_tasks: bool = True


@contextlib.contextmanager
def frozen_batchnorm(model: nn.Module) -> Iterator[None]:
    """Put every BatchNorm layer of ``model`` in eval mode (normalise with, and never update, the running
    statistics) and restore each layer's previous mode on exit (paper §3.3, the CFA pass)."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    modes = [m.training for m in bns]
    try:
        for m in bns:
            m.eval()
        yield
    finally:
        for m, mode in zip(bns, modes):
            m.train(mode)


def independence_loss(z_s: Tensor, z_p: Tensor) -> Tensor:
    """L_ind = linear CKA(Z_s, Z_p), Z_s the spatially averaged semantic stream (Eq. 11), in float32."""
    zs = z_s.float().mean(dim=(2, 3)) if z_s.dim() == 4 else z_s.float()
    return linear_cka(zs, z_p.float())  # Eq. 11


def cfa_loss(
    model: GroundedModel,
    batch: Mapping[str, Tensor],
    outputs: Mapping[str, Tensor],
    tasks: Sequence,
    task_weights: Mapping[str, float],
    form: str,
    generator: torch.Generator,
) -> tuple[Tensor, Tensor]:
    """L_CFA (Eq. 12) for one batch; returns ``(loss, perm)``. See the module doc for both forms."""
    if not isinstance(model, nn.Module):
        raise TypeError(
            f"cfa_loss needs a torch module (its BatchNorm layers are frozen), got {type(model).__name__}"
        )
    image, z_s, z_p = batch["image"], outputs["z_s"], outputs["z_p"]
    b = z_p.shape[0]
    perm = torch.randperm(b, generator=generator).to(z_p.device)  # z_p ~ empirical residual distribution
    with frozen_batchnorm(model):  # BN statistics frozen for the whole counterfactual pass (§3.3)
        with torch.no_grad():  # gradients stopped through the counterfactual generator
            x_cf = model.decode(z_s.detach(), z_p.detach()[perm], tuple(image.shape[-2:]))["recon"]
        x_cf = x_cf.detach().to(image.dtype)
        enc_cf = model.encode(x_cf)
        if form == "consistency":
            zs = z_s.float()
            diff = (enc_cf["z_s"].float() - zs).pow(2).mean()  # Eq. 12: ||z_s(x~) - z_s(x)||^2
            loss = diff / zs.detach().pow(2).mean().clamp_min(1e-8)
        elif form == "task":
            preds = model.predict(enc_cf)
            loss = sum(
                task_weights.get(t.name, 1.0) * t.loss(preds[t.name].float(), batch[t.name]) for t in tasks
            )
        else:
            raise ValueError(f"loss.cfa_form={form!r} is not one of consistency, task")
    return loss, perm


class Objective:
    """Callable ``objective(model, batch, progress, generator) -> ObjectiveOutput`` (Eq. 16; see module doc).

    Args:
        loss_cfg: a :class:`coremtl_lite.config.LossConfig`.
        tasks: the :class:`coremtl_lite.tasks.Task` list.
        perceptual: the perceptual distance module; default ``build_perceptual(loss_cfg.perceptual)``
            (built lazily, the first time a model with a decoder is seen).
        physics_weights: weights of the hard-grounding regularisers (default :data:`PHYSICS_WEIGHTS`).
    """

    def __init__(
        self,
        loss_cfg: LossConfig,
        tasks: Sequence,
        perceptual: nn.Module | None | str = "default",
        physics_weights: Mapping[str, float] | None = None,
    ):
        loss_cfg.validate()
        self.cfg = loss_cfg
        self.tasks = list(tasks)
        names = {t.name for t in self.tasks}
        unknown = set(loss_cfg.task_weights) - names
        if unknown:
            raise KeyError(
                f"loss.task_weights names unknown tasks {sorted(unknown)}; tasks are {sorted(names)}"
            )
        self.task_weights = {t.name: float(loss_cfg.task_weights.get(t.name, 1.0)) for t in self.tasks}
        self._perceptual = perceptual
        self.physics_weights = dict(PHYSICS_WEIGHTS if physics_weights is None else physics_weights)

    # ------------------------------------------------------------------------------ schedule
    def decomposition_stage(self, progress: float, model: nn.Module) -> bool:
        """True in stage 0: ``progress < loss.decomposition_warmup`` for a model with a decoder."""
        return _has_decoder(model) and progress < self.cfg.decomposition_warmup

    def lambda_ind(self, progress: float, model: nn.Module | None = None) -> float:
        """lambda_ind(p): 0 in stage 0, then a linear ramp over ``loss.ind_ramp`` to ``loss.lambda_ind``.

        Without a decoder (no stage 0) the ramp starts at p = 0.
        """
        w = self.cfg.decomposition_warmup if (model is None or _has_decoder(model)) else 0.0
        if progress < w:
            return 0.0
        if self.cfg.ind_ramp <= 0:
            return float(self.cfg.lambda_ind)
        return float(self.cfg.lambda_ind) * min(1.0, (progress - w) / self.cfg.ind_ramp)

    def cfa_active(self, progress: float) -> bool:
        """Whether CFA may apply at ``progress`` (from ``loss.cfa_start`` on, with lambda_cfa, cfa_prob > 0)."""
        return self.cfg.lambda_cfa > 0 and self.cfg.cfa_prob > 0 and progress >= self.cfg.cfa_start

    # ------------------------------------------------------------------------------- the loss
    def perceptual(self) -> nn.Module | None:
        """The perceptual distance (built on first use)."""
        if isinstance(self._perceptual, str):
            self._perceptual = build_perceptual(self.cfg.perceptual)
        return self._perceptual

    def _task_losses(self, preds: Mapping[str, Tensor], batch: Mapping[str, Tensor]) -> dict[str, Tensor]:
        losses = {}
        for t in self.tasks:
            if t.name not in batch:
                raise KeyError(
                    f"objective: the batch has no labels for task {t.name!r} (keys {sorted(batch)})"
                )
            losses[t.name] = self.task_weights[t.name] * t.loss(preds[t.name].float(), batch[t.name])
        return losses

    def __call__(
        self, model: nn.Module, batch: Mapping[str, Tensor], progress: float, generator: torch.Generator
    ) -> ObjectiveOutput:
        """The terms of Eq. 16 for one batch at ``progress`` (fraction of the run done, in [0, 1])."""
        image = batch["image"]
        if self.decomposition_stage(progress, model) and _has_decoder(model):
            # stage 0: the encoder and decoder train on the decomposition; the heads are only read
            enc = model.encode(image)
            with torch.no_grad(), eval_mode(model.heads):
                preds = model.predict(enc)
                task_losses = self._task_losses(preds, batch)
            outputs = {"preds": preds, "features": enc["features"], "z_s": enc["z_s"], "z_p": enc["z_p"]}
            train_tasks = False
        else:
            outputs = model(image)
            task_losses = self._task_losses(outputs["preds"], batch)
            train_tasks = True
        logs: dict[str, Any] = {"stage0": float(not train_tasks)} if _has_decoder(model) else {}
        terms: dict[str, Tensor] = {}
        if outputs.get("z_p") is not None and outputs.get("z_s") is not None:
            ind = independence_loss(outputs["z_s"], outputs["z_p"])
            lam = self.lambda_ind(progress, model)
            terms["ind"] = lam * ind  # lambda_ind L_ind
            logs.update(cka=ind.detach(), ind=ind.detach(), lambda_ind=lam)  # tensors: read back at the end
            if _has_decoder(model):
                decoded = model.decode(outputs["z_s"], outputs["z_p"], tuple(image.shape[-2:]))
                outputs["decoded"] = decoded
                perceptual = self.perceptual()
                if perceptual is not None:
                    perceptual.to(image.device)
                rec, parts = reconstruction_loss(
                    decoded,
                    image,
                    batch,
                    perceptual,
                    self.cfg.perceptual_weight,
                    self.physics_weights,
                    balance=self.cfg.rec_balance,
                )
                terms["rec"] = self.cfg.lambda_rec * rec  # lambda_rec L_rec
                logs["rec"] = rec.detach()
                logs.update(parts)
                ratio = parts["rec_ratio"]  # the bar CFA needs: MSE(recon) / MSE(each image's mean colour)
                applied = 0.0
                if self.cfa_active(progress) and ratio <= self.cfg.cfa_max_rec_ratio:
                    draw = torch.rand((), generator=generator)  # apply CFA with probability cfa_prob
                    if float(draw) < self.cfg.cfa_prob:
                        cfa, _ = cfa_loss(
                            model, batch, outputs, self.tasks, self.task_weights, self.cfg.cfa_form, generator
                        )
                        terms["cfa"] = self.cfg.lambda_cfa * cfa  # lambda_cfa L_CFA
                        logs["cfa"] = cfa.detach()
                        applied = 1.0
                logs["cfa_applied"] = applied
        extra = functools.reduce(operator.add, terms.values()) if terms else None  # the sum, term by term
        return ObjectiveOutput(
            task_losses=task_losses,
            extra_loss=extra,
            outputs=outputs,
            logs=as_floats(logs),
            extra_terms=terms,
            train_tasks=train_tasks,
        )


def _has_decoder(model: object) -> TypeGuard[GroundedModel]:
    """Whether ``model`` is a dual-stream model with a grounding decoder (a :class:`GroundedModel`)."""
    return isinstance(model, GroundedModel) and model.dual_stream


@contextlib.contextmanager
def eval_mode(module: nn.Module) -> Iterator[None]:
    """``module`` in eval mode (BatchNorm statistics read, never updated), its mode restored on exit."""
    was = module.training
    module.eval()
    try:
        yield
    finally:
        module.train(was)


def build_objective(loss_cfg: LossConfig, tasks: Sequence, **kwargs: Any) -> Objective:
    """The :class:`Objective` of ``loss_cfg`` (a :class:`coremtl_lite.config.LossConfig`) for ``tasks``."""
    return Objective(loss_cfg, tasks, **kwargs)
