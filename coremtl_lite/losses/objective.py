"""The CORE-MTL training objective (paper Eq. 16) and its staged schedule.

    L = sum_t lambda_t L_t  +  lambda_rec L_rec  +  lambda_ind(epoch) L_ind  +  lambda_cfa L_CFA     (Eq. 16)

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

Schedule (released configs; :meth:`Objective.on_epoch_start`): for epochs < ``decomposition_warmup_epochs``
the task heads are frozen (``requires_grad = False``) and lambda_ind = 0; afterwards lambda_ind ramps
linearly, lambda_ind(e) = lambda_ind * min(1, (e - W + 1) / R) with W the warm-up and R =
``ind_ramp_epochs`` (R = 0: full weight at once); CFA is active from ``cfa_start_epoch`` on.

All losses are computed in float32 (AMP-safe).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from coremtl_lite.losses.cka import linear_cka
from coremtl_lite.losses.reconstruction import PHYSICS_WEIGHTS, build_perceptual, reconstruction_loss

__all__ = ["Objective", "ObjectiveOutput", "build_objective", "cfa_loss", "frozen_batchnorm", "independence_loss"]


@dataclass
class ObjectiveOutput:
    """``task_losses`` {task: lambda_t L_t}, ``extra_loss`` (weighted L_rec + L_ind + L_CFA, or None),
    the model's ``outputs`` dict and float ``logs``."""

    task_losses: dict[str, Tensor]
    extra_loss: Tensor | None
    outputs: dict[str, Any]
    logs: dict[str, float] = field(default_factory=dict)


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


def cfa_loss(model: nn.Module, batch: Mapping[str, Tensor], outputs: Mapping[str, Tensor], tasks: Sequence,
             task_weights: Mapping[str, float], form: str, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """L_CFA (Eq. 12) for one batch; returns ``(loss, perm)``. See the module doc for both forms."""
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
            loss = sum(task_weights.get(t.name, 1.0) * t.loss(preds[t.name].float(), batch[t.name])
                       for t in tasks)
        else:
            raise ValueError(f"loss.cfa_form={form!r} is not one of consistency, task")
    return loss, perm


class Objective:
    """Callable ``objective(model, batch, epoch, generator) -> ObjectiveOutput`` (Eq. 16; see module doc).

    Args:
        loss_cfg: a :class:`coremtl_lite.config.LossConfig`.
        tasks: the :class:`coremtl_lite.tasks.Task` list.
        perceptual: the perceptual distance module; default ``build_perceptual(loss_cfg.perceptual)``
            (built lazily, the first time a model with a decoder is seen).
        physics_weights: weights of the hard-grounding regularisers (default :data:`PHYSICS_WEIGHTS`).
    """

    def __init__(self, loss_cfg, tasks: Sequence, perceptual: nn.Module | None | str = "default",
                 physics_weights: Mapping[str, float] | None = None):
        loss_cfg.validate()
        self.cfg = loss_cfg
        self.tasks = list(tasks)
        names = {t.name for t in self.tasks}
        unknown = set(loss_cfg.task_weights) - names
        if unknown:
            raise KeyError(f"loss.task_weights names unknown tasks {sorted(unknown)}; tasks are {sorted(names)}")
        self.task_weights = {t.name: float(loss_cfg.task_weights.get(t.name, 1.0)) for t in self.tasks}
        self._perceptual = perceptual
        self.physics_weights = dict(PHYSICS_WEIGHTS if physics_weights is None else physics_weights)

    # ------------------------------------------------------------------------------ schedule
    def lambda_ind(self, epoch: int) -> float:
        """lambda_ind(epoch): 0 during the warm-up, then a linear ramp to ``loss.lambda_ind``."""
        w, r = self.cfg.decomposition_warmup_epochs, self.cfg.ind_ramp_epochs
        if epoch < w:
            return 0.0
        if r <= 0:
            return float(self.cfg.lambda_ind)
        return float(self.cfg.lambda_ind) * min(1.0, (epoch - w + 1) / r)

    def cfa_active(self, epoch: int) -> bool:
        """Whether CFA may be applied in ``epoch`` (from ``cfa_start_epoch`` on, with lambda_cfa > 0)."""
        return self.cfg.lambda_cfa > 0 and self.cfg.cfa_prob > 0 and epoch >= self.cfg.cfa_start_epoch

    def heads_frozen(self, epoch: int) -> bool:
        """True during the decomposition warm-up."""
        return epoch < self.cfg.decomposition_warmup_epochs

    def on_epoch_start(self, model: nn.Module, epoch: int) -> None:
        """Apply the staged schedule: freeze the task heads during the warm-up, unfreeze afterwards.

        Only models with a residual stream (``dual_stream``) have a decomposition warm-up; the heads of
        vanilla models are never frozen.
        """
        heads = getattr(model, "heads", None)
        if heads is None or not getattr(model, "dual_stream", False):
            return
        trainable = not self.heads_frozen(epoch)
        for p in heads.parameters():
            p.requires_grad_(trainable)

    # ------------------------------------------------------------------------------- the loss
    def perceptual(self) -> nn.Module | None:
        """The perceptual distance (built on first use)."""
        if isinstance(self._perceptual, str):
            self._perceptual = build_perceptual(self.cfg.perceptual)
        return self._perceptual

    def __call__(self, model: nn.Module, batch: Mapping[str, Tensor], epoch: int,
                 generator: torch.Generator) -> ObjectiveOutput:
        image = batch["image"]
        outputs = model(image)
        preds = outputs["preds"]
        task_losses = {}
        for t in self.tasks:
            if t.name not in batch:
                raise KeyError(f"objective: the batch has no labels for task {t.name!r} (keys {sorted(batch)})")
            task_losses[t.name] = self.task_weights[t.name] * t.loss(preds[t.name].float(), batch[t.name])
        logs: dict[str, float] = {}
        extra: Tensor | None = None
        if outputs.get("z_p") is not None and outputs.get("z_s") is not None:
            ind = independence_loss(outputs["z_s"], outputs["z_p"])
            lam = self.lambda_ind(epoch)
            extra = lam * ind  # lambda_ind L_ind
            logs.update(cka=float(ind.detach()), ind=float(ind.detach()), lambda_ind=lam)
            if hasattr(model, "decode"):
                decoded = model.decode(outputs["z_s"], outputs["z_p"], tuple(image.shape[-2:]))
                outputs["decoded"] = decoded
                perceptual = self.perceptual()
                if perceptual is not None:
                    perceptual.to(image.device)
                rec, parts = reconstruction_loss(decoded, image, batch, perceptual, self.cfg.perceptual_weight,
                                                 self.physics_weights)
                extra = extra + self.cfg.lambda_rec * rec  # lambda_rec L_rec
                logs["rec"] = float(rec.detach())
                logs.update(parts)
                applied = 0.0
                if self.cfa_active(epoch):
                    draw = torch.rand((), generator=generator)  # apply CFA with probability cfa_prob
                    if float(draw) < self.cfg.cfa_prob:
                        cfa, _ = cfa_loss(model, batch, outputs, self.tasks, self.task_weights, self.cfg.cfa_form,
                                          generator)
                        extra = extra + self.cfg.lambda_cfa * cfa  # lambda_cfa L_CFA
                        logs["cfa"] = float(cfa.detach())
                        applied = 1.0
                logs["cfa_applied"] = applied
        return ObjectiveOutput(task_losses=task_losses, extra_loss=extra, outputs=outputs, logs=logs)


def build_objective(loss_cfg, tasks: Sequence, **kwargs: Any) -> Objective:
    """The :class:`Objective` of ``loss_cfg`` (a :class:`coremtl_lite.config.LossConfig`) for ``tasks``."""
    return Objective(loss_cfg, tasks, **kwargs)
