"""IRM for multi-task learning (Arjovsky et al. 2019, IRMv1), in MT-CRL's multi-task form (Hu et al. 2022, MT-CRL Eq. 6).

Also holds the small machinery the environment-based methods (IRM, MT-CRL's G-IRM, DANN) share:
they see two *environments* through the generic held-out hook of ``methods/base.py`` -- the step's
training batch (e = train) and a held-out batch (e = valid), MT-CRL's "train/valid slices as
environments" (MT-CRL §3.2, appendix C) -- compute a penalty on them in :meth:`meta_step`, keep its
gradient aside (``meta_step`` must leave ``.grad`` untouched) and add it in :meth:`backward`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from coremtl_lite.methods.base import Weighting, register
from coremtl_lite.runtime import as_floats


def task_specific_parameters(losses: Sequence[Tensor], params: Sequence[Tensor]) -> list[set[int]]:
    """For each task t, the ids of the parameters that only ``losses[t]`` depends on: its predictor f_t.

    ``losses`` must be the separate per-task scalars (not one stacked tensor, whose every entry
    would depend on every task's graph).

    Read from the autograd graph, so it works for any model: a parameter reached by task t's loss and
    by no other task's loss belongs to task t's head (MT-CRL's per-task predictor f_t, §3.1); a
    parameter reached by several tasks is shared. With a single task every parameter it reaches is
    "its own" (IRM then penalises the whole model, as single-task IRM with a learnt classifier would).
    """
    used = []
    for loss in losses:
        grads = torch.autograd.grad(loss, list(params), retain_graph=True, allow_unused=True)
        used.append({id(p) for p, g in zip(params, grads) if g is not None})
    out = []
    for t, mine in enumerate(used):
        others = set().union(*(u for s, u in enumerate(used) if s != t)) if len(used) > 1 else set()
        out.append(mine - others)
    return out


class EnvironmentPenaltyMethod(Weighting):
    """Equal weighting plus a penalty computed on two environments in :meth:`meta_step`.

    Subclasses implement :meth:`penalty_grads`, which returns ``[(param, grad), ...]``; the grads are
    added to ``.grad`` by the next :meth:`backward`, after the plain back-propagation of
    ``sum_t L_t + extra_loss + self.extra_terms(...)``. If the trainer never calls :meth:`meta_step`
    (no held-out batch), :meth:`backward` raises, since the method would silently be EW.
    """

    # registered buffers (typed here; nn.Module would type them Tensor | Module)
    step_count: Tensor

    uses_validation_batch = True

    def __init__(self, task_names: Sequence[str], penalty_weight: float = 1.0, anneal_steps: int = 0):
        super().__init__(task_names)
        if penalty_weight < 0:
            raise ValueError(f"{type(self).__name__}: penalty_weight must be >= 0, got {penalty_weight}")
        if anneal_steps < 0:
            raise ValueError(f"{type(self).__name__}: anneal_steps must be >= 0, got {anneal_steps}")
        self.penalty_weight, self.anneal_steps = float(penalty_weight), int(anneal_steps)
        self.register_buffer("step_count", torch.zeros((), dtype=torch.long))
        self._pending: list[tuple[Tensor, Tensor]] | None = None
        self._pending_logs: dict[str, float] = {}
        self._predictors: list[set[int]] | None = None

    def weights(self, losses: Tensor) -> Tensor:
        return torch.ones_like(losses)

    def current_weight(self) -> float:
        """The penalty weight now: 0 during the first ``anneal_steps`` steps (IRM's usual annealing)."""
        return 0.0 if int(self.step_count) < self.anneal_steps else self.penalty_weight

    def task_losses(self, losses: dict[str, Tensor]) -> list[Tensor]:
        """The separate task losses in ``task_names`` order (an error names a missing task)."""
        self._ordered(losses)  # validates the keys
        return [losses[t] for t in self.task_names]

    def predictors(self, losses: Sequence[Tensor], params: Sequence[Tensor]) -> list[set[int]]:
        """Per-task predictor parameter ids (:func:`task_specific_parameters`), found once and cached."""
        if self._predictors is None:
            self._predictors = task_specific_parameters(losses, params)
        return self._predictors

    def penalty_grads(
        self, loss_fn: Callable, train_batch: dict, val_batch: dict, params: list[Tensor]
    ) -> tuple[list[tuple[Tensor, Tensor]], dict[str, float]]:
        """``([(param, d penalty / d param)], logs)`` -- implemented by each method."""
        raise NotImplementedError  # abstract

    def meta_step(self, loss_fn, train_batch, val_batch, params):
        params = [p for p in params if p.requires_grad]
        if not params:
            raise ValueError(f"{type(self).__name__}.meta_step: params holds no trainable tensor")
        with torch.enable_grad():
            pending, logs = self.penalty_grads(loss_fn, train_batch, val_batch, params)
        self._pending = [(p, g.detach()) for p, g in pending]
        self._pending_logs = logs
        return logs

    def extra_terms(
        self, losses: Tensor, shared_params: Sequence[Tensor], features: Tensor | None
    ) -> tuple[Tensor | None, dict[str, float]]:
        """Further loss terms of the training batch for subclasses (none by default; MT-CRL overrides backward)."""
        return None, {}

    def backward(self, losses, *, shared_params, features=None, extra_loss=None):
        if self._pending is None:
            raise RuntimeError(
                f"{type(self).__name__} needs the trainer's held-out hook: call "
                "meta_step(loss_fn, train_batch, val_batch, params) before every backward "
                f"(the method's uses_validation_batch is {self.uses_validation_batch})"
            )
        vec = self._ordered(losses)
        total = vec.sum()
        if extra_loss is not None:
            total = total + extra_loss
        extra, logs = self.extra_terms(vec, shared_params, features)
        if extra is not None:
            total = total + extra
        total.backward()
        with torch.no_grad():
            for p, g in self._pending:
                if p.grad is None:
                    p.grad = g.to(p.dtype).clone()
                else:
                    p.grad.add_(g.to(p.grad.dtype))
        self._pending = None
        self.step_count += 1
        return {**logs, **self._pending_logs}


@register("irm")
class IRM(EnvironmentPenaltyMethod):
    """IRM with per-task predictors (MT-CRL §4, "For IRM we adopt different per-task predictors").

    Environments e in {train, valid} (the held-out hook's two batches). Penalty, MT-CRL Eq. 6 with
    the per-task predictor f_t in place of IRMv1's fixed scalar classifier (Arjovsky et al. 2019,
    Eq. IRMv1):

        P = sum_t sum_e || grad_{f_t} R_t^e(Phi, f_t) ||^2,

    back-propagated into *everything*, the predictors included -- exactly what G-IRM avoids (MT-CRL
    §3.2: an over-parametrised f_t can zero its gradient without becoming invariant). The update is
    ``grad(sum_t R_t^train) + penalty_weight * grad(P)``; ``anneal_steps`` keeps the penalty off for
    the first steps (IRM's usual schedule). f_t is found from the autograd graph
    (:func:`task_specific_parameters`), so any model with per-task heads works.
    """

    def __init__(self, task_names, penalty_weight: float = 1.0, anneal_steps: int = 0):
        super().__init__(task_names, penalty_weight, anneal_steps)

    def penalty_grads(self, loss_fn, train_batch, val_batch, params):
        penalty = torch.zeros(())
        per_env = []
        for batch in (train_batch, val_batch):
            losses = self.task_losses(loss_fn(batch))
            preds = self.predictors(losses, params)
            env = losses[0].new_zeros(())
            for t in range(self.num_tasks):
                head = [p for p in params if id(p) in preds[t]]
                if not head:
                    raise ValueError(
                        f"irm: task {self.task_names[t]!r} has no task-specific parameters "
                        "(per-task predictor); the model must have one head per task"
                    )
                grads = torch.autograd.grad(losses[t], head, create_graph=True)
                env = env + sum(g.pow(2).sum() for g in grads)  # MT-CRL Eq. 6 (f_t part)
            per_env.append(env)
            penalty = penalty + env
        logs = as_floats(  # one read-back from the device
            {"irm/penalty": penalty, "irm/penalty_train": per_env[0], "irm/penalty_valid": per_env[1]}
        )
        weight = self.current_weight()
        if weight == 0.0:
            return [], logs
        grads = torch.autograd.grad(weight * penalty, params, allow_unused=True)
        return [(p, g) for p, g in zip(params, grads) if g is not None], logs
