"""The paper's claims, checked against our own benchmark rows (mean over seeds).

Each check returns a :class:`Claim` with what we measured and whether it holds: a plain yes/no, so
a notebook or note can say which claims reproduce on ShadedScenes and which do not.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from coremtl_lite.bench.report import HEADLINE


@dataclass(frozen=True)
class Claim:
    """One claim of the paper, what our rows show, and whether it holds."""

    claim: str
    evidence: str
    holds: bool | None  # None: the rows needed are missing


def _mean(rows, suite, variant, domain, task, metric) -> float | None:
    for r in rows:
        if (r["suite"], r["variant"], r["domain"], r["task"], r["metric"]) == (suite, variant, domain, task, metric):
            return r["mean"]
    return None


def _score(value: float, higher_better: bool) -> float:
    return value if higher_better else -value


def best_on_target(rows: Sequence[dict[str, Any]], suite: str = "sim2real", ours: str = "core_mtl") -> list[Claim]:
    """Paper Table 2: CORE-MTL is best on the target-domain metrics (one claim per headline metric)."""
    out = []
    for task, (metric, higher) in HEADLINE.items():
        if task == "all":
            continue
        vals = {r["variant"]: r["mean"] for r in rows if (r["suite"], r["domain"], r["task"], r["metric"]) ==
                (suite, "target", task, metric) and r["variant"] != "stl"}
        if ours not in vals or len(vals) < 2:
            continue
        best = max(vals, key=lambda v: _score(vals[v], higher))
        out.append(Claim(f"{ours} is best on the target {task} {metric}",
                         f"{ours} {vals[ours]:.4g}; best {best} {vals[best]:.4g}", best == ours))
    return out


def smallest_gap(rows: Sequence[dict[str, Any]], suite: str = "sim2real", ours: str = "core_mtl") -> list[Claim]:
    """Paper Table 2: CORE-MTL has the smallest source-to-target degradation."""
    out = []
    for task, (metric, higher) in HEADLINE.items():
        if task == "all":
            continue
        gaps = {}
        for v in {r["variant"] for r in rows if r["suite"] == suite and r["variant"] != "stl"}:
            src, tgt = _mean(rows, suite, v, "source", task, metric), _mean(rows, suite, v, "target", task, metric)
            if src is not None and tgt is not None:
                gaps[v] = _score(src, higher) - _score(tgt, higher)  # degradation, lower is better
        if ours not in gaps or len(gaps) < 2:
            continue
        best = min(gaps, key=gaps.get)
        out.append(Claim(f"{ours} has the smallest {task} {metric} degradation",
                         f"{ours} {gaps[ours]:.4g}; smallest {best} {gaps[best]:.4g}", best == ours))
    return out


def ablation_improves_step_by_step(rows: Sequence[dict[str, Any]], domain: str = "source") -> list[Claim]:
    """Paper Table 5: each component (DS, grounding, CKA, CFA) improves on the previous step."""
    steps = ["vanilla", "ds", "ds+grounding", "ds+grounding+cka", "full"]
    out = []
    for task, (metric, higher) in HEADLINE.items():
        vals = [_mean(rows, "ablation", s, domain, task, metric) for s in steps]
        if task == "all" or any(v is None for v in vals):
            continue
        ups = [_score(b, higher) > _score(a, higher) for a, b in zip(vals, vals[1:])]
        out.append(Claim(f"ablation improves step by step on {domain} {task} {metric}",
                         " -> ".join(f"{v:.4g}" for v in vals), all(ups)))
    return out


def flat_cost(rows: Sequence[dict[str, Any]], ours: str = "core_mtl", surgery: str = "pcgrad") -> list[Claim]:
    """Paper Table 4: CORE-MTL's time per epoch stays flat from 10 to 40 tasks; PCGrad's grows."""
    def t(variant: str) -> float | None:
        return _mean(rows, "scalability", variant, "-", "all", "seconds/epoch")

    out = []
    for name, grows in ((ours, False), (surgery, True)):
        lo, hi = t(f"{name}@10"), t(f"{name}@40")
        if lo is None or hi is None:
            continue
        ratio = hi / lo
        holds = ratio > 2.0 if grows else ratio < 1.5
        out.append(Claim(f"{name}'s time per epoch {'grows' if grows else 'stays flat'} from 10 to 40 tasks",
                         f"{lo:.3g} s -> {hi:.3g} s (x{ratio:.2f})", holds))
    return out


def check_claims(rows: Sequence[dict[str, Any]]) -> list[Claim]:
    """Every check above on the rows available."""
    return [*best_on_target(rows), *smallest_gap(rows), *ablation_improves_step_by_step(rows, "source"),
            *ablation_improves_step_by_step(rows, "target"), *flat_cost(rows)]
