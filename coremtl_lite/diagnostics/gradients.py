"""Gradient orthogonality (paper §4.4.2, Fig. 4-5; Proposition 2.5, Eq. 10).

Proposition 2.5 bounds ``E[cos²(∇_z L_task, ∇_z L_res)]`` by the dependence between the streams:
as ``z_s`` and ``z_p`` become independent, the task gradient and the gradient of a residual-side
loss become orthogonal. The paper shows (Fig. 4) the cosine between the task gradient and the
*reconstruction* gradient with respect to the shared representation over training (near zero for
CORE-MTL), and (Fig. 5) heatmaps of pairwise task-task gradient cosines.

Here "the shared representation" is ``features``, the tensor the task heads read (CONTRIBUTING.md:
``z_s`` for the dual-stream model, the encoder map for a vanilla one), and gradients are taken per
batch (the whole ``(B, C, h, w)`` tensor flattened into one vector).

* The task gradient is ``∇_features Σ_t L_t`` (unweighted task losses); the per-task gradients
  ``∇_features L_t`` give the task-task cosine matrix.
* The reconstruction gradient: for CORE-MTL, ``∇_features ||D(z_s, z_p) - x||_1`` through the
  model's own grounding decoder. A vanilla model (EW, PCGrad) has no decoder, so we attach a small
  **reconstruction probe** (:class:`ReconProbe`: 1x1 conv, upsampling, 3x3 conv, sigmoid) trained on
  the detached features to reconstruct the image, and use its L1 gradient. The probe never touches
  the model's training; it asks "what would a reconstruction objective want from this
  representation?". For CORE-MTL the same probe can be used too (``use_probe=True``), which compares
  like with like.

:class:`GradientCosineLogger` is a trainer callback that records these numbers on a fixed probe
batch every few steps (``on_step_end``) and at each epoch end.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from coremtl_lite.diagnostics.streams import is_dual_stream, model_output

__all__ = [
    "GradientCosineLogger",
    "ReconProbe",
    "cosine",
    "cosine_matrix",
    "gradient_cosines",
    "representation_gradients",
]


def cosine(a: Tensor, b: Tensor, eps: float = 1e-12) -> float:
    """Cosine of two flattened gradients; 0 when either is zero (no direction to compare)."""
    a, b = a.reshape(-1).double(), b.reshape(-1).double()
    na, nb = a.norm(), b.norm()
    if na < eps or nb < eps:
        return 0.0
    return float((a @ b) / (na * nb))


def representation_gradients(losses: dict[str, Tensor], rep: Tensor) -> dict[str, Tensor]:
    """``{name: ∇_rep loss}`` (flattened); a loss not connected to ``rep`` gets a zero gradient."""
    out = {}
    for name, loss in losses.items():
        (g,) = torch.autograd.grad(loss, rep, retain_graph=True, allow_unused=True)
        out[name] = torch.zeros(rep.numel(), dtype=rep.dtype) if g is None else g.detach().reshape(-1).cpu()
    return out


def cosine_matrix(grads: dict[str, Tensor]) -> tuple[list[str], np.ndarray]:
    """Pairwise cosines of named gradients (paper Fig. 5): ``(names, (T, T) matrix)``."""
    names = list(grads)
    mat = np.eye(len(names))
    for i, a in enumerate(names):
        for j in range(i + 1, len(names)):
            mat[i, j] = mat[j, i] = cosine(grads[a], grads[names[j]])
    return names, mat


class ReconProbe(nn.Module):
    """A small decoder from a ``(B, C, h, w)`` representation to an ``(B, 3, H, W)`` image.

    Used to define a reconstruction gradient for models without a decoder (module docstring). Its
    parameters are trained only by :meth:`fit` on detached features.
    """

    def __init__(self, channels: int, hidden: int = 32, seed: int = 0, lr: float = 3e-3):
        super().__init__()
        gen_state = torch.random.get_rng_state()
        torch.manual_seed(seed)
        try:
            self.inp = nn.Conv2d(channels, hidden, 1)
            self.out = nn.Conv2d(hidden, 3, 3, padding=1)
        finally:
            torch.random.set_rng_state(gen_state)
        self.opt = torch.optim.Adam(self.parameters(), lr=lr)

    def forward(self, features: Tensor, size: tuple[int, int]) -> Tensor:
        h = F.relu(self.inp(features))
        h = F.interpolate(h, size=size, mode="bilinear", align_corners=False)
        return torch.sigmoid(self.out(h))

    def fit(self, features: Tensor, images: Tensor, steps: int = 20) -> float:
        """A few Adam steps of L1 reconstruction on detached ``features``; returns the last loss."""
        feats, target = features.detach(), images.detach()
        loss = torch.tensor(0.0)
        with torch.enable_grad():
            for _ in range(steps):
                self.opt.zero_grad(set_to_none=True)
                loss = (self(feats, tuple(target.shape[-2:])) - target).abs().mean()
                loss.backward()
                self.opt.step()
        return float(loss.detach())


def _task_losses(tasks: Sequence, preds: dict[str, Tensor], batch: dict, device) -> dict[str, Tensor]:
    losses = {}
    for task in tasks:
        if task.name not in preds:
            raise KeyError(f"model predictions lack task {task.name!r}; got {sorted(preds)}")
        if task.name not in batch:
            raise KeyError(f"batch lacks the target of task {task.name!r}; got {sorted(batch)}")
        losses[task.name] = task.loss(preds[task.name], batch[task.name].to(device))
    return losses


def gradient_cosines(
    model: nn.Module,
    tasks: Sequence,
    batch: dict,
    probe: ReconProbe | None = None,
    use_probe: bool | None = None,
    probe_steps: int = 20,
) -> dict:
    """Task/reconstruction and task/task gradient cosines on one batch (paper Fig. 4-5, Eq. 10).

    Args:
        model: a coremtl_lite model; run in eval mode (BatchNorm statistics fixed) with autograd on.
        tasks: the Task objects (``name``, ``loss``).
        batch: a batch dict with ``image`` and the task targets.
        probe: a :class:`ReconProbe`, needed when the reconstruction gradient comes from a probe.
        use_probe: use the probe even for a model with a decoder (default: only when it has none).
        probe_steps: probe training steps before measuring (warm-started across calls).

    Returns ``{"task_recon": cos(∇ Σ_t L_t, ∇ L_rec), "task_recon/<t>": cos(∇ L_t, ∇ L_rec),
    "names": [...], "task_task": (T, T) matrix, "recon_source": "decoder" | "probe"}``.
    """
    use_probe = (not is_dual_stream(model)) if use_probe is None else use_probe
    if use_probe and probe is None:
        raise ValueError("this model has no decoder (or use_probe=True): pass a ReconProbe")
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    images = batch["image"].to(device)
    try:
        with torch.enable_grad():
            out = model_output(model, images)
            rep = out["features"]
            if not rep.requires_grad:
                raise RuntimeError("the model's features do not require grad; are its parameters frozen?")
            losses = _task_losses(tasks, out["preds"], batch, device)
            if use_probe:
                probe.to(device)
                probe.fit(rep, images, steps=probe_steps)
                recon = probe(rep, tuple(images.shape[-2:]))
            else:
                decoded = model.decode(out["z_s"], out["z_p"])
                recon = decoded["recon"] if isinstance(decoded, dict) else decoded
            rec_loss = (recon.float() - images.float()).abs().mean()
            grads = representation_gradients(
                {**losses, "__total__": sum(losses.values()), "__recon__": rec_loss}, rep
            )
    finally:
        model.train(was_training)
        model.zero_grad(set_to_none=True)
    g_rec = grads.pop("__recon__")
    g_tot = grads.pop("__total__")
    names, mat = cosine_matrix(grads)
    result = {
        "task_recon": cosine(g_tot, g_rec),
        "names": names,
        "task_task": mat,
        "recon_source": "probe" if use_probe else "decoder",
        "recon_loss": float(rec_loss.detach()),
    }
    for name, g in grads.items():
        result[f"task_recon/{name}"] = cosine(g, g_rec)
    return result


class GradientCosineLogger:
    """Trainer callback recording :func:`gradient_cosines` on a fixed batch during training (Fig. 4).

    The trainer calls ``on_step_end(trainer, step_info)`` after each optimisation step and
    ``on_epoch_end(trainer, history)`` after each epoch; this callback reads ``trainer.model`` and
    ``trainer.tasks`` and measures every ``every`` steps (and at each epoch end). Records are dicts
    ``{"step", "epoch", "task_recon", "task_recon/<t>", "task_task"}`` in ``self.records``.
    """

    def __init__(
        self,
        batch: dict,
        every: int = 10,
        use_probe: bool | None = None,
        probe_steps: int = 20,
        seed: int = 0,
    ):
        if every < 1:
            raise ValueError(f"every must be >= 1, got {every}")
        self.batch, self.every, self.use_probe, self.probe_steps, self.seed = (
            batch,
            every,
            use_probe,
            probe_steps,
            seed,
        )
        self.records: list[dict] = []
        self.probe: ReconProbe | None = None
        self._step = 0
        self._epoch = 0
        self.names: list[str] = []

    def _measure(self, trainer, step: int, epoch: int) -> None:
        model = trainer.model
        tasks = getattr(trainer, "tasks", None)
        if tasks is None:
            raise AttributeError("GradientCosineLogger needs trainer.tasks (the Task objects)")
        needs_probe = (not is_dual_stream(model)) if self.use_probe is None else self.use_probe
        if needs_probe and self.probe is None:
            with torch.no_grad():
                was = model.training
                model.eval()
                device = next(model.parameters()).device
                feats = model_output(model, self.batch["image"][:1].to(device))["features"]
                model.train(was)
            self.probe = ReconProbe(feats.shape[1], seed=self.seed)
        res = gradient_cosines(
            model, tasks, self.batch, probe=self.probe, use_probe=needs_probe, probe_steps=self.probe_steps
        )
        rec = {k: v for k, v in res.items() if k not in ("names",)}
        rec.update(step=step, epoch=epoch)
        self.names = res["names"]
        self.records.append(rec)

    def on_step_end(self, trainer, step_info) -> None:
        """Measure every ``every`` global steps (``step_info["step"]`` if given, else an own counter)."""
        step = int(step_info.get("step", self._step)) if isinstance(step_info, dict) else self._step
        epoch = int(step_info.get("epoch", self._epoch)) if isinstance(step_info, dict) else self._epoch
        self._step = step + 1
        if step % self.every == 0:
            self._measure(trainer, step, epoch)

    def on_epoch_end(self, trainer, history) -> None:
        """Measure once more at the end of every epoch."""
        self._epoch += 1
        self._measure(trainer, self._step, self._epoch)

    def state_dict(self) -> dict:
        """The records as JSON-able data (saved beside a checkpoint by ``load_or_train``)."""
        recs = [
            {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in r.items()} for r in self.records
        ]
        return {
            "records": recs,
            "names": getattr(self, "names", []),
            "step": self._step,
            "epoch": self._epoch,
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict` output."""
        self.records = [
            {k: (np.asarray(v) if k == "task_task" else v) for k, v in r.items()} for r in state["records"]
        ]
        self.names, self._step, self._epoch = list(state["names"]), int(state["step"]), int(state["epoch"])

    def series(self, key: str = "task_recon") -> tuple[list[int], list[float]]:
        """``(steps, values)`` of one recorded quantity, for plotting."""
        return [r["step"] for r in self.records], [float(r[key]) for r in self.records]

    def mean_task_task(self, last: int | None = None) -> np.ndarray:
        """The task-task cosine matrix averaged over the records (the last ``last`` ones if given)."""
        recs = self.records[-last:] if last else self.records
        if not recs:
            raise ValueError("no records yet")
        return np.mean([r["task_task"] for r in recs], axis=0)
