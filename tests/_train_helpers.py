"""Tiny hand-made model and objective for the trainer tests (the CONTRIBUTING.md contracts, in miniature),
and a counter of host read-backs."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils._python_dispatch import TorchDispatchMode

from coremtl_lite.config import get_config


@dataclass
class TinyOutput:
    """Same fields as the objective contract's ``ObjectiveOutput``."""

    task_losses: dict[str, Tensor]
    extra_loss: Tensor | None
    outputs: dict[str, Any]
    logs: dict[str, float] = field(default_factory=dict)
    extra_terms: dict[str, Tensor] = field(default_factory=dict)
    train_tasks: bool = True


class TinyDense(nn.Module):
    """conv-BN-ReLU encoder and 1x1 heads for segmentation/depth/normal at input resolution."""

    def __init__(self, tasks, width: int = 8):
        super().__init__()
        self.encoder = nn.Sequential(
            nn.Conv2d(3, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU()
        )
        self.heads = nn.ModuleDict({t.name: nn.Conv2d(width, t.channels, 1) for t in tasks})

    def shared_parameters(self) -> list[nn.Parameter]:
        return list(self.encoder.parameters())

    def forward(self, image: Tensor) -> dict[str, Any]:
        f = self.encoder(image)
        preds = {}
        for name, head in self.heads.items():
            p = head(f)
            if name == "normal":
                p = nn.functional.normalize(p, dim=1)
            preds[name] = p
        return {"preds": preds, "features": f}


class TinyObjective:
    """Task losses of the model on a batch whose input gets generator-drawn noise (exercises the generator)."""

    def __init__(self, tasks, noise: float = 0.05):
        self.tasks, self.noise = tasks, noise
        self.progress_seen: list[float] = []

    def __call__(self, model, batch, progress, generator) -> TinyOutput:
        self.progress_seen.append(progress)
        image = batch["image"]
        noise = torch.randn(image.shape, generator=generator).to(image.device) * self.noise
        out = model(image + noise)
        losses = {t.name: t.loss(out["preds"][t.name], batch[t.name]) for t in self.tasks}
        return TinyOutput(losses, None, out, {"noise": float(noise.abs().mean())})


def tiny_config(tmp_path, *overrides: str):
    """The ci profile shrunk further: 16 px, 32 training scenes, batch 8, 2 epochs, checkpoints in tmp_path."""
    return get_config(
        "ci",
        [
            "data.image_size=16",
            "data.train_size=32",
            "data.val_size=16",
            "data.test_size=16",
            "data.batch_size=8",
            "optim.epochs=2",
            "optim.warmup_epochs=1",
            "train.method=ew",
            f"train.out_dir={tmp_path}",
            "train.progress=false",
            *overrides,
        ],
    )


def tiny_trainer(tmp_path, *overrides: str, callbacks=(), **kwargs):
    """A Trainer on :func:`tiny_config` with :class:`TinyDense` and :class:`TinyObjective`."""
    from coremtl_lite.tasks import tasks_from_info
    from coremtl_lite.train import Trainer

    cfg = tiny_config(tmp_path, *overrides)
    from coremtl_lite.data import build_splits

    info = build_splits(cfg.data, cfg.train.seed).train.task_info
    tasks = tasks_from_info(info, cfg.data.tasks)
    torch.manual_seed(cfg.train.seed)
    return Trainer(cfg, callbacks=callbacks, model=TinyDense(tasks), objective=TinyObjective(tasks), **kwargs)


def ddp_trainer(out_dir, *overrides: str):
    """The trainer of the DDP test: the ci profile's vanilla model (lite encoder, DeepLab-style heads) with
    equal weighting, trained by :class:`TinyObjective` without input noise (the plain task losses)."""
    from coremtl_lite.data import build_splits
    from coremtl_lite.models import build_model
    from coremtl_lite.tasks import tasks_from_info
    from coremtl_lite.train import Trainer

    over = [
        "data.image_size=16",
        "data.train_size=32",
        "data.val_size=16",
        "data.test_size=16",
        "data.batch_size=8",
        "optim.epochs=2",
        "optim.warmup_epochs=1",
        "optim.lr=1e-3",
        "train.method=ew",
        "model.architecture=vanilla",
        "model.grounding=none",
        f"train.out_dir={out_dir}",
        "train.progress=false",
        "train.checkpoint_every=0",
        "train.eval_every=0",
        *overrides,
    ]
    cfg = get_config("ci", over)
    tasks = tasks_from_info(build_splits(cfg.data, cfg.train.seed).train.task_info, cfg.data.tasks)
    torch.manual_seed(cfg.train.seed)
    return Trainer(cfg, model=build_model(cfg.model, tasks), objective=TinyObjective(tasks, noise=0.0))


class ReadBacks(TorchDispatchMode):
    """Counts the scalar read-backs (``float(tensor)``, ``.item()``: ``aten._local_scalar_dense``) of the
    code run under it; on a GPU each one waits for the device to finish."""

    def __init__(self) -> None:
        super().__init__()
        self.items = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.items += func is torch.ops.aten._local_scalar_dense.default
        return func(*args, **(kwargs or {}))
