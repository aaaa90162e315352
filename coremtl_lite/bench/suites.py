"""The paper's experiments as data: each suite is a list of variants (config overrides) to train.

A *variant* is one training recipe, e.g. ``pcgrad`` = vanilla shared encoder + PCGrad, or
``core_mtl`` = dual-stream model + grounding + CKA + CFA (with equal weighting of the tasks).
Suites that train the same recipes on the same data (``id``, ``sim2real``, ``corruptions``) share
their runs: a run is identified by its full configuration, so it is trained once and read many
times.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from coremtl_lite.data.attributes import attribute_task_names
from coremtl_lite.data.corruptions import CORRUPTIONS

#: the vanilla shared-encoder model every optimisation-centric baseline uses
VANILLA = ("model.dual_stream=false", "model.grounding=none")
#: CORE-MTL: dual stream, hard (physics) grounding, CKA and CFA, tasks equally weighted (Eq. 16)
CORE_MTL = ("model.dual_stream=true", "model.grounding=hard", "train.method=ew")


@dataclass(frozen=True)
class Variant:
    """One recipe of a suite: a display name and the config overrides that make it."""

    name: str
    overrides: tuple[str, ...]
    #: train one model per task (the single-task reference of Δm%)
    per_task: bool = False


@dataclass(frozen=True)
class Suite:
    """An experiment of the paper in miniature: what to train and where to evaluate it."""

    name: str
    paper: str  # where the paper reports it
    description: str
    variants: tuple[Variant, ...]
    base_overrides: tuple[str, ...] = ()
    #: domains every run of the suite is evaluated on (test split)
    eval_domains: tuple[str, ...] = ("source",)
    #: the domain the suite's table reports (others are kept in the JSON)
    report_domains: tuple[str, ...] = ("source",)
    #: reports time per epoch rather than only the metrics
    timed: bool = False
    extra: dict = field(default_factory=dict)


def baseline(method: str) -> Variant:
    """A vanilla-model baseline trained with ``method`` from the registry."""
    return Variant(method, VANILLA + (f"train.method={method}",))


STL = Variant("stl", VANILLA + ("train.method=ew",), per_task=True)
CORE = Variant("core_mtl", CORE_MTL)

#: the baselines of the default tables (any registered method can be added with --methods)
DEFAULT_BASELINES = ("ew", "uw", "dwa", "rlw", "mgda", "pcgrad", "cagrad", "nash_mtl", "upgrad")

CORRUPTION_DOMAINS = tuple(f"corrupt:{c}:{s}" for c in CORRUPTIONS for s in range(1, 6))
SCENE_DOMAINS = ("source", "target") + CORRUPTION_DOMAINS


def _ablation_variants() -> tuple[Variant, ...]:
    ds = ("model.dual_stream=true", "train.method=ew")
    return (
        Variant("vanilla", VANILLA + ("train.method=ew",)),
        Variant("ds", ds + ("model.grounding=none", "loss.lambda_ind=0", "loss.lambda_cfa=0")),
        Variant("ds+grounding", ds + ("model.grounding=hard", "loss.lambda_ind=0", "loss.lambda_cfa=0")),
        Variant("ds+grounding+cka", ds + ("model.grounding=hard", "loss.lambda_cfa=0")),
        Variant("full", CORE_MTL),
    )


def build_suites(baselines: tuple[str, ...] = DEFAULT_BASELINES) -> dict[str, Suite]:
    """All suites of the reproduction, keyed by name (the order of the paper's tables)."""
    trained_on_source = (STL,) + tuple(baseline(m) for m in baselines) + (CORE,)
    scenes = ("data.dataset=shaded_scenes",)
    suites = [
        Suite("id", "Table 1", "in-distribution: ShadedScenes source -> source",
              trained_on_source, scenes, SCENE_DOMAINS, ("source",)),
        Suite("sim2real", "Table 2", "domain shift: source -> target (the GTA5 -> Cityscapes analogue)",
              trained_on_source, scenes, SCENE_DOMAINS, ("source", "target")),
        Suite("corruptions", "Table 2, appendix J",
              "four corruptions x five severities of the source test set (the Cityscapes-C analogue)",
              trained_on_source, scenes, SCENE_DOMAINS, CORRUPTION_DOMAINS),
        Suite("colored", "appendix I", "each class one colour; the target permutes the colours",
              (baseline("ew"), baseline("pcgrad"), CORE),
              scenes + ("data.source_domain=colored",), ("colored", "colored-permuted"),
              ("colored", "colored-permuted")),
        Suite("scalability", "Table 4",
              "ShadedAttributes with 10/20/30/40 attribute tasks (one head each): time per epoch and accuracy",
              tuple(Variant(f"{name}@{n}", over + (f"data.num_attributes={n}",
                                                    f"data.tasks={','.join(attribute_task_names(n))}"))
                    for n in (10, 20, 30, 40)
                    for name, over in (("ew", VANILLA + ("train.method=ew",)),
                                       ("pcgrad", VANILLA + ("train.method=pcgrad",)),
                                       ("stch", VANILLA + ("train.method=stch",)),
                                       ("core_mtl", CORE_MTL + ("loss.lambda_cfa=0", "loss.lambda_ind=0.5")))),
              ("data.dataset=shaded_attributes", "model.grounding=none"),
              ("source",), ("source",), timed=True),
        Suite("ablation", "Table 5", "vanilla, dual stream, + grounding, + CKA, + CFA",
              _ablation_variants(), scenes, SCENE_DOMAINS, ("source", "target")),
        Suite("grounding", "Table 6", "soft (generic decoder) vs hard (physics decoder) grounding",
              (Variant("soft", CORE_MTL + ("model.grounding=soft",)), Variant("hard", CORE_MTL)),
              scenes, SCENE_DOMAINS, ("source", "target")),
        Suite("lambda-ind", "Tables 8-9", "the independence weight lambda_ind",
              tuple(Variant(f"lambda_ind={v:g}", CORE_MTL + (f"loss.lambda_ind={v}",))
                    for v in (0.0, 0.1, 1.0, 10.0, 100.0)),
              scenes, SCENE_DOMAINS, ("source", "target")),
        Suite("lambda-cfa", "Table 10", "the counterfactual weight lambda_cfa",
              tuple(Variant(f"lambda_cfa={v:g}", CORE_MTL + (f"loss.lambda_cfa={v}",))
                    for v in (0.0, 0.1, 0.5, 1.0, 5.0)),
              scenes, SCENE_DOMAINS, ("source", "target")),
    ]
    return {s.name: s for s in suites}
