"""The run recipes, written once: which config overrides make CORE-MTL, a baseline, an ablation step.

A :class:`Recipe` is a name and the ``section.key=value`` overrides that turn any profile into that
run. Every comparison of the package -- the ``coremtl-lite demo``, the benchmark suites, the
tutorials' shared runs -- takes its recipes from here, so "CORE-MTL" means the same thing everywhere:

* **CORE-MTL** (:data:`CORE_MTL`): the dual-stream model with hard (physics) grounding, trained on the
  total objective of the paper's Eq. 16 (tasks + CKA independence + reconstruction + counterfactual
  alignment), the tasks equally weighted;
* **a baseline** (:func:`baseline`): the vanilla shared-encoder model, no grounding decoder, trained
  with any registered multi-task method (the extra terms of Eq. 16 do not apply to it);
* **the ablation steps** (:data:`ABLATION`): vanilla, dual stream, + grounding, + CKA, + CFA;
* **single-task learning** (:data:`STL`): the vanilla model trained once per task, the reference of
  Delta m%; :func:`expand` turns it into one config per task.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from coremtl_lite.config import Config, get_config

__all__ = [
    "ABLATION",
    "CORE",
    "CORE_MTL",
    "CORE_SOFT",
    "DUAL_STREAM",
    "RECIPES",
    "Recipe",
    "STL",
    "VANILLA",
    "baseline",
    "expand",
    "recipe",
    "recipe_config",
    "single_task_runs",
]

#: the vanilla shared-encoder model that every optimisation-centric baseline uses
VANILLA = ("model.architecture=vanilla", "model.grounding=none")
#: CORE-MTL's model: the dual stream with hard (physics) grounding (its losses follow from the loss.* weights)
DUAL_STREAM = ("model.architecture=dual_stream", "model.grounding=hard")
#: CORE-MTL: dual stream, hard (physics) grounding, CKA and CFA, tasks equally weighted (Eq. 16)
CORE_MTL = DUAL_STREAM + ("train.method=ew",)


@dataclass(frozen=True)
class Recipe:
    """One training recipe: a display name and the config overrides that make it."""

    name: str
    overrides: tuple[str, ...]
    #: train one model per task (the single-task reference of Delta m%; see :func:`expand`)
    per_task: bool = False


def baseline(method: str) -> Recipe:
    """The vanilla model trained with ``method`` (any name of the method registry), named after it."""
    return Recipe(method, VANILLA + (f"train.method={method}",))


CORE = Recipe("core_mtl", CORE_MTL)
#: CORE-MTL with soft grounding: a generic decoder instead of the physics one (Eq. 15)
CORE_SOFT = Recipe("core_mtl_soft", CORE_MTL + ("model.grounding=soft",))
STL = Recipe("stl", VANILLA + ("train.method=stl",), per_task=True)

_DS = ("model.architecture=dual_stream", "train.method=ew")
#: the ablation of the paper's Table 5, one component added at a time
ABLATION = (
    Recipe("vanilla", VANILLA + ("train.method=ew",)),
    Recipe("ds", _DS + ("model.grounding=none", "loss.lambda_ind=0", "loss.lambda_cfa=0")),
    Recipe("ds+grounding", _DS + ("model.grounding=hard", "loss.lambda_ind=0", "loss.lambda_cfa=0")),
    Recipe("ds+grounding+cka", _DS + ("model.grounding=hard", "loss.lambda_cfa=0")),
    Recipe("full", CORE_MTL),
)

#: the recipes known by name (the demo's and the tutorials' runs)
RECIPES: dict[str, Recipe] = {r.name: r for r in (CORE, CORE_SOFT, baseline("ew"), baseline("pcgrad"), STL)}


def recipe(name: str) -> Recipe:
    """The recipe called ``name`` (:data:`RECIPES`); the baseline of any other method is :func:`baseline`."""
    if name not in RECIPES:
        raise ValueError(
            f"unknown recipe {name!r}; choose one of {', '.join(RECIPES)} "
            "(or baseline(<method>) for the vanilla model with any method)"
        )
    return RECIPES[name]


def recipe_config(name: str | Recipe, profile: str | None = None, overrides: Sequence[str] = ()) -> Config:
    """The validated config of a recipe on ``profile`` (default ``$COREMTL_PROFILE``), then ``overrides``."""
    r = name if isinstance(name, Recipe) else recipe(name)
    return get_config(profile, [*r.overrides, *overrides])


def single_task_runs(cfg: Config) -> list[tuple[str, Config]]:
    """Single-task learning on ``cfg``: one ``(task, cfg_task)`` per task of ``cfg.data.tasks``
    (:func:`~coremtl_lite.methods.stl.single_task_configs`: the same data, model and schedule, one task)."""
    from coremtl_lite.methods.stl import single_task_configs

    return [(task, c.validate()) for task, c in single_task_configs(cfg)]


def expand(r: Recipe, cfg: Config) -> list[tuple[str | None, Config]]:
    """The runs a recipe needs, ``cfg`` being its config: ``[(None, cfg)]``, or for a per-task recipe
    (:data:`STL`) :func:`single_task_runs`."""
    return list(single_task_runs(cfg)) if r.per_task else [(None, cfg)]
