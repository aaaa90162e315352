"""The paper's experiments as data: each suite is a list of recipes to train and the domains to test.

The recipes themselves (``pcgrad`` = vanilla shared encoder + PCGrad, ``core_mtl`` = dual-stream
model + grounding + CKA + CFA with equal task weights, ...) are :mod:`coremtl_lite.experiments.recipes`.
Suites that train the same recipes on the same data (``id``, ``sim2real``, ``corruptions``) share
their runs: a run is identified by its resolved configuration
(:func:`~coremtl_lite.experiments.runs.run_key`), so it is trained once and read many times.

**The out-of-distribution study** (the paper's Theorem 2.4 and its dials, on ShadedScenes only):

* ``ood-severity`` trains every method of :data:`OOD_METHODS` once on the default source and tests it on
  ``shift:<s>`` for s in :data:`~coremtl_lite.diagnostics.ood_bound.OOD_SEVERITIES` (every residual group
  shifted by s) and on the per-factor domains ``only:<group>`` (one group fully shifted, the others not):
  the severity curve and the "which factor breaks which model" table. Its runs also measure Theorem
  2.4's numbers (the probe ``ood_bound``: the OOD gap, L_leak and W1 per severity) and the robustness
  ratio (the probe ``robustness``), read like with like: CORE-MTL against ``ds`` (below).
* ``ood-rho`` trains the same methods at the spurious-correlation strengths :data:`OOD_RHOS` and tests
  them on the default target. The grid has three points because each is a full set of runs (methods x
  seeds, a few minutes per run on the ``cpu`` profile); 0.5 is the default, shared with ``ood-severity``.

MT-CRL is not in the study: its model (``model.architecture=mtcrl``) predicts one vector per task and
cannot make ShadedScenes' dense predictions (segmentation, depth, normals). The dual-stream model without
the CORE-MTL losses (``ds``, the ablation's second step) is, so every dual-stream effect can be read
against the same architecture trained without them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from coremtl_lite.data.attributes import attribute_task_names
from coremtl_lite.data.corruptions import CORRUPTIONS
from coremtl_lite.diagnostics.ood_bound import OOD_SEVERITIES
from coremtl_lite.experiments.recipes import ABLATION, CORE, CORE_MTL, STL, Recipe, baseline


@dataclass(frozen=True)
class Suite:
    """An experiment of the paper in miniature: what to train and where to evaluate it."""

    name: str
    paper: str  # where the paper reports it
    description: str
    variants: tuple[Recipe, ...]
    base_overrides: tuple[str, ...] = ()
    #: domains every run of the suite is evaluated on (test split)
    eval_domains: tuple[str, ...] = ("source",)
    #: the domain the suite's table reports (others are kept in the JSON)
    report_domains: tuple[str, ...] = ("source",)
    #: reports time per epoch rather than only the metrics
    timed: bool = False
    extra: dict = field(default_factory=dict)
    #: measurements of each trained model stored in its record (:data:`coremtl_lite.bench.runner.PROBES`)
    probes: tuple[str, ...] = ()


#: the baselines of the default tables (any registered method can be added with --methods)
DEFAULT_BASELINES = ("ew", "uw", "dwa", "rlw", "mgda", "pcgrad", "cagrad", "nash_mtl", "upgrad")

#: the scalability suite's recipes (Table 4): CORE-MTL without CFA, the independence weight at 0.5
SCALABILITY = (
    baseline("ew"),
    baseline("pcgrad"),
    baseline("stch"),
    Recipe("core_mtl", CORE_MTL + ("loss.lambda_cfa=0", "loss.lambda_ind=0.5")),
)

CORRUPTION_DOMAINS = tuple(f"corrupt:{c}:{s}" for c in CORRUPTIONS for s in range(1, 6))
SCENE_DOMAINS = ("source", "target") + CORRUPTION_DOMAINS

#: the methods of the out-of-distribution study: six baselines on the vanilla model, then CORE-MTL
OOD_BASELINES = ("ew", "uw", "pcgrad", "mgda", "cagrad", "stch")
#: the dual-stream model trained without the CORE-MTL losses (the ablation's ``ds`` step)
DS = next(r for r in ABLATION if r.name == "ds")
OOD_METHODS = tuple(baseline(m) for m in OOD_BASELINES) + (DS, CORE)
#: the ``shift:<s>`` test domains of ``ood-severity``
SHIFT_DOMAINS = tuple(f"shift:{s:g}" for s in OOD_SEVERITIES)
#: the per-factor test domains of ``ood-severity``: one residual group fully shifted
FACTOR_DOMAINS = ("only:colour", "only:texture", "only:lighting", "only:camera")
#: what ``ood-severity`` evaluates: its own domains, then those of the suites it shares runs with (``sim2real``,
#: ``ablation``: the target and the corruptions), so a run stored by either suite serves the other one
OOD_EVAL_DOMAINS = ("source", *SHIFT_DOMAINS, *FACTOR_DOMAINS, *SCENE_DOMAINS[1:])
#: the training rho grid of ``ood-rho``
OOD_RHOS = (0.0, 0.5, 0.9)


def rho_variant(r: Recipe, rho: float) -> Recipe:
    """``r`` trained at ``data.rho=rho``, named ``<name>@rho=<rho>`` (:func:`split_rho` reads it back)."""
    return Recipe(f"{r.name}@rho={rho:g}", r.overrides + (f"data.rho={rho:g}",))


def split_rho(variant: str) -> tuple[str, float] | None:
    """``"ew@rho=0.9"`` -> ``("ew", 0.9)``; None for a name without a rho."""
    name, sep, rho = variant.partition("@rho=")
    return (name, float(rho)) if sep else None


def build_suites(baselines: tuple[str, ...] = DEFAULT_BASELINES) -> dict[str, Suite]:
    """All suites of the reproduction, keyed by name (the order of the paper's tables)."""
    trained_on_source = (STL,) + tuple(baseline(m) for m in baselines) + (CORE,)
    scenes = ("data.dataset=shaded_scenes",)
    suites = [
        Suite(
            "id",
            "Table 1",
            "in-distribution: ShadedScenes source -> source",
            trained_on_source,
            scenes,
            SCENE_DOMAINS,
            ("source",),
        ),
        Suite(
            "sim2real",
            "Table 2",
            "domain shift: source -> target (the GTA5 -> Cityscapes analogue)",
            trained_on_source,
            scenes,
            SCENE_DOMAINS,
            ("source", "target"),
        ),
        Suite(
            "corruptions",
            "Table 2, appendix J",
            "four corruptions x five severities of the source test set (the Cityscapes-C analogue)",
            trained_on_source,
            scenes,
            SCENE_DOMAINS,
            CORRUPTION_DOMAINS,
        ),
        Suite(
            "colored",
            "appendix I",
            "each class one colour; the target permutes the colours",
            (baseline("ew"), baseline("pcgrad"), CORE),
            scenes + ("data.source_domain=colored",),
            ("colored", "colored-permuted"),
            ("colored", "colored-permuted"),
        ),
        Suite(
            "scalability",
            "Table 4",
            "ShadedAttributes with 10/20/30/40 attribute tasks (one head each): time per epoch and accuracy",
            tuple(
                Recipe(
                    f"{r.name}@{n}",
                    r.overrides
                    + (f"data.num_attributes={n}", f"data.tasks={','.join(attribute_task_names(n))}"),
                )
                for n in (10, 20, 30, 40)
                for r in SCALABILITY
            ),
            ("data.dataset=shaded_attributes", "model.grounding=none"),
            ("source",),
            ("source",),
            timed=True,
        ),
        Suite(
            "ablation",
            "Table 5",
            "vanilla, dual stream, + grounding, + CKA, + CFA",
            ABLATION,
            scenes,
            SCENE_DOMAINS,
            ("source", "target"),
        ),
        Suite(
            "grounding",
            "Table 6",
            "soft (generic decoder) vs hard (physics decoder) grounding",
            (Recipe("soft", CORE_MTL + ("model.grounding=soft",)), Recipe("hard", CORE_MTL)),
            scenes,
            SCENE_DOMAINS,
            ("source", "target"),
        ),
        Suite(
            "lambda-ind",
            "Tables 8-9",
            "the independence weight lambda_ind",
            tuple(
                Recipe(f"lambda_ind={v:g}", CORE_MTL + (f"loss.lambda_ind={v}",))
                for v in (0.0, 0.1, 1.0, 10.0, 100.0)
            ),
            scenes,
            SCENE_DOMAINS,
            ("source", "target"),
        ),
        Suite(
            "lambda-cfa",
            "Table 10",
            "the counterfactual weight lambda_cfa",
            tuple(
                Recipe(f"lambda_cfa={v:g}", CORE_MTL + (f"loss.lambda_cfa={v}",))
                for v in (0.0, 0.1, 0.5, 1.0, 5.0)
            ),
            scenes,
            SCENE_DOMAINS,
            ("source", "target"),
        ),
        Suite(
            "ood-severity",
            "Theorem 2.4",
            "trained on the source; tested under every residual group shifted by s, and one group at a time",
            OOD_METHODS,
            scenes,
            OOD_EVAL_DOMAINS,
            ("source", "target", *SHIFT_DOMAINS, *FACTOR_DOMAINS),
            probes=("ood_bound", "robustness"),
        ),
        Suite(
            "ood-rho",
            "Theorem 2.4",
            f"trained at the spurious-correlation strength rho in {', '.join(f'{r:g}' for r in OOD_RHOS)}; "
            "tested on the default target",
            tuple(rho_variant(r, rho) for r in OOD_METHODS for rho in OOD_RHOS),
            scenes,
            ("source", "target"),
            ("source", "target"),
        ),
    ]
    return {s.name: s for s in suites}
