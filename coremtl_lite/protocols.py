"""The contracts between the layers, written as :class:`typing.Protocol` classes.

CONTRIBUTING.md describes each contract in words; this module states it in code, so that a type
checker checks the annotations that use it and the package can ask ``isinstance(obj, Protocol)``
instead of probing attributes by name. A protocol is structural: a class satisfies it by having the
attributes and methods listed, without inheriting from it. The ones marked ``@runtime_checkable``
are used in ``isinstance`` checks at run time; such a check looks only at the *names* (not at the
signatures), so each protocol names what it promises in its docstring.

This module imports nothing from the rest of the package: it sits in the lowest layer and every
layer may use it.

Datasets
    :class:`MultiTaskDataset` (every dataset), :class:`BatchDataset` (renders a whole batch at once),
    and the optional capabilities the diagnostics use: :class:`CausalMaskDataset`,
    :class:`PerSampleCausalMasks`, :class:`FactorGradientDataset`, :class:`ToggleableDataset`,
    :class:`RenderableScenes`.
Models
    :class:`MultiTaskModel` (every model), :class:`EncodePredictModel` (the dual-stream and vanilla
    models: ``encode`` then ``predict``), :class:`GroundedModel` (adds the grounding decoder),
    :class:`ModularModel` (MT-CRL's modules and routing).
Training
    :class:`Objective` and its :class:`ObjectiveResult`, :class:`MultiTaskMethod`,
    :class:`DistributedMeter` (a metric whose state can be summed over processes),
    :class:`Stateful` (anything that saves and restores its state).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor, nn

__all__ = [
    "BatchDataset",
    "CausalMaskDataset",
    "DistributedMeter",
    "EncodePredictModel",
    "FactorGradientDataset",
    "GroundedModel",
    "ModularModel",
    "MultiTaskDataset",
    "MultiTaskMethod",
    "MultiTaskModel",
    "Objective",
    "ObjectiveResult",
    "PerSampleCausalMasks",
    "RenderableScenes",
    "Stateful",
    "ToggleableDataset",
]

#: a sample dict or a collated batch dict (keys: CONTRIBUTING.md, "Sample dict")
Batch = dict[str, Any]


# ---------------------------------------------------------------------------------------------- datasets


@runtime_checkable
class MultiTaskDataset(Protocol):
    """Every dataset: ``len``, ``dataset[i] -> sample dict`` and ``task_info`` ``{task: {"kind": ..., ...}}``."""

    task_info: dict[str, dict[str, Any]]

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> Batch: ...


@runtime_checkable
class BatchDataset(Protocol):
    """A dataset (a :class:`MultiTaskDataset`) that also renders a whole batch at once:
    ``get_batch(indices) -> collated batch dict`` (the synthetic sets; the loader then never collates
    single samples). The run-time check looks for ``__len__`` and ``get_batch`` only."""

    def __len__(self) -> int: ...

    def get_batch(self, indices: Sequence[int] | Tensor) -> Batch: ...


@runtime_checkable
class CausalMaskDataset(Protocol):
    """A dataset with one known causal mask per task for all samples: ``causal_mask[task]`` is a 0/1
    tensor over the dataset's factors (MT-CRL's spurious score)."""

    causal_mask: Mapping[str, Tensor]


@runtime_checkable
class PerSampleCausalMasks(Protocol):
    """A dataset whose causal masks differ per sample: ``causal_masks_for(batch) -> {task: (B, ...)}``
    (ConfoundedScenes)."""

    def causal_masks_for(self, batch: Batch) -> dict[str, Tensor]: ...


@runtime_checkable
class FactorGradientDataset(Protocol):
    """A dataset that gives the gradient of a score with respect to its generating factors:
    ``factor_gradients(score_fn, indices) -> {factor: tensor}`` (MultiSEM, whose inputs are a
    differentiable function of the factors)."""

    def factor_gradients(self, *args: Any, **kwargs: Any) -> Any: ...


@runtime_checkable
class ToggleableDataset(Protocol):
    """A dataset that can re-draw samples with one factor switched: ``toggle(...)`` (the interventions of
    the spurious-correlation study)."""

    def toggle(self, *args: Any, **kwargs: Any) -> Any: ...


@runtime_checkable
class RenderableScenes(Protocol):
    """A scene generator: ``sample_factors(indices) -> factors`` and ``render(factors) -> sample dict``
    (ShadedScenes; the widgets re-render a scene with edited factors)."""

    def sample_factors(self, *args: Any, **kwargs: Any) -> Any: ...

    def render(self, *args: Any, **kwargs: Any) -> Any: ...


# ------------------------------------------------------------------------------------------------ models


@runtime_checkable
class MultiTaskModel(Protocol):
    """Every model: ``model(image) -> {"preds": {task: tensor}, "features": tensor, ...}``;
    ``heads`` (an ``nn.ModuleDict``, one head per task); ``shared_parameters()`` (the parameters
    every task shares: the Jacobian target of gradient methods); ``dual_stream`` (True when the
    output also holds ``z_s`` and ``z_p``)."""

    dual_stream: bool
    heads: nn.ModuleDict

    def __call__(self, image: Tensor) -> dict[str, Any]: ...

    def shared_parameters(self) -> list[nn.Parameter]: ...


@runtime_checkable
class EncodePredictModel(MultiTaskModel, Protocol):
    """A model in two steps (the dual-stream and vanilla models): ``encode(image) -> enc`` (a dict with
    ``size``, ``low``, ``feature_map``, ``features`` and, dual-stream, ``z_s``, ``z_p``) and
    ``predict(enc) -> {task: tensor}`` from ``enc`` alone."""

    def encode(self, image: Tensor) -> dict[str, Any]: ...

    def predict(self, enc: dict[str, Any]) -> dict[str, Tensor]: ...


@runtime_checkable
class GroundedModel(EncodePredictModel, Protocol):
    """A dual-stream model with a grounding decoder: ``decode(z_s, z_p, size) -> {"recon": sRGB image,
    ...}`` (CORE-MTL's D(z_s, z_p), docs/method.md)."""

    def decode(self, z_s: Tensor, z_p: Tensor, size: tuple[int, ...] | None = None) -> dict[str, Tensor]: ...


@runtime_checkable
class ModularModel(MultiTaskModel, Protocol):
    """MT-CRL's model: ``predict_from_modules(z, module_scale) -> (preds, module outputs, routing)``,
    the predictions computed from given module outputs ``z`` (the spurious-score diagnostics)."""

    def predict_from_modules(
        self, z: Tensor, module_scale: Tensor | None = None
    ) -> tuple[dict, Tensor, Tensor]: ...


# ---------------------------------------------------------------------------------------------- training


class ObjectiveResult(Protocol):
    """What an objective returns (:class:`coremtl_lite.losses.ObjectiveOutput` is the implementation)."""

    task_losses: dict[str, Tensor]
    extra_loss: Tensor | None
    outputs: dict[str, Any]
    logs: dict[str, float]
    extra_terms: dict[str, Tensor]
    train_tasks: bool


class Objective(Protocol):
    """``objective(model, batch, progress, generator) -> ObjectiveResult``: ``progress`` is the fraction
    of the run's optimiser steps already taken; all randomness comes from ``generator``."""

    def __call__(
        self, model: nn.Module, batch: Batch, progress: float, generator: torch.Generator
    ) -> ObjectiveResult: ...


@runtime_checkable
class MultiTaskMethod(Protocol):
    """A multi-task method (:class:`coremtl_lite.methods.Method` is the base class of all of them):
    ``backward`` fills ``.grad`` from the per-task losses; ``parameters()`` are added to the
    optimiser; ``on_epoch_end(stats)`` after each epoch; ``state_dict()`` / ``load_state_dict()`` for
    exact resume; ``uses_validation_batch`` asks for ``meta_step`` with a held-out batch each step."""

    name: str
    uses_validation_batch: bool

    def backward(
        self,
        losses: dict[str, Tensor],
        *,
        shared_params: Sequence[Tensor],
        features: Tensor | None = None,
        extra_loss: Tensor | None = None,
    ) -> dict[str, float]: ...

    def on_epoch_end(self, stats: dict[str, float]) -> None: ...

    def meta_step(
        self, loss_fn: Callable[..., Any], train_batch: Batch, val_batch: Batch, params: Sequence[Tensor]
    ) -> dict[str, float]: ...


@runtime_checkable
class DistributedMeter(Protocol):
    """A metric accumulator whose state is one flat tensor of summable counts: ``state()`` and
    ``load_state(state)`` let data-parallel evaluation all-reduce it (CONTRIBUTING.md, "Tasks").
    The run-time check looks for ``state`` and ``load_state``."""

    def state(self) -> Tensor: ...

    def load_state(self, state: Tensor) -> None: ...


@runtime_checkable
class Stateful(Protocol):
    """Anything whose state is saved and restored: ``state_dict()`` and ``load_state_dict(state)``."""

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> Any: ...
