"""The paper's claims, checked against our own benchmark rows (mean over seeds).

Each check returns a :class:`Claim` with what we measured and whether it holds, so a notebook or note
can say which claims reproduce on ShadedScenes and which do not.

The claims that compare methods carry a 95% confidence interval, and their verdict follows it:
*reproduced* when the whole interval is on the claim's side, *not reproduced* when it is wholly on the
other side, *inconclusive* when it straddles zero (or fewer than two seeds exist). For a difference of
two methods' means over seeds the interval is Welch's t interval from the rows' mean, standard
deviation and n; for a correlation it is the bootstrap interval over runs of
:func:`coremtl_lite.bench.ood.theorem24`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from coremtl_lite.bench.ood import summary_row
from coremtl_lite.bench.report import HEADLINE
from coremtl_lite.bench.runner import is_trivial
from coremtl_lite.experiments.aggregate import format_mean_std

#: the word of each verdict: ``holds`` True, False, or None (the interval straddles the boundary)
VERDICTS = {True: "reproduced", False: "not reproduced", None: "inconclusive"}


@dataclass(frozen=True)
class Claim:
    """One claim of the paper, what our rows show, and whether it holds."""

    claim: str
    evidence: str
    holds: bool | None  # None: inconclusive (the interval straddles the claim's boundary, or too few seeds)
    #: the 95% confidence interval of the measured quantity (positive supports the claim), when it has one
    interval: tuple[float, float] | None = None

    @property
    def verdict(self) -> str:
        return VERDICTS[self.holds]


def _mean(rows, suite, variant, domain, task, metric) -> float | None:
    for r in rows:
        if (r["suite"], r["variant"], r["domain"], r["task"], r["metric"]) == (
            suite,
            variant,
            domain,
            task,
            metric,
        ):
            return r["mean"]
    return None


def _score(value: float, higher_better: bool) -> float:
    return value if higher_better else -value


def _interval_in_claim_direction(
    a: dict[str, Any], b: dict[str, Any], higher: bool
) -> tuple[float, float] | None:
    """Welch's interval of ``a - b`` turned so that positive means ``a`` is better."""
    iv = welch_interval(a, b)
    if iv is None:
        return None
    lo, hi = sorted((iv[0], iv[1]) if higher else (-iv[0], -iv[1]))
    return lo, hi


def _best_of(
    ours: dict[str, Any], others: dict[str, dict[str, Any]], higher: bool
) -> tuple[bool | None, tuple[float, float] | None, str]:
    """Is ``ours`` better than every row of ``others``? Reproduced when its interval against each one is
    above 0, not reproduced when one of them is better beyond its interval, inconclusive otherwise. The
    interval returned is the one against the best of ``others`` (by mean)."""
    ivs = {v: _interval_in_claim_direction(ours, row, higher) for v, row in others.items()}
    best = max(others, key=lambda v: _score(others[v]["mean"], higher))
    return _all_hold([holds_by_interval(iv) for iv in ivs.values()]), ivs[best], best


def _all_hold(verdicts: Sequence[bool | None]) -> bool | None:
    """The verdict of "every one of these holds": False if one fails, True if all hold, else None."""
    return False if False in verdicts else (True if all(verdicts) else None)


def _fmt(row: dict[str, Any]) -> str:
    return format_mean_std(row["mean"], row["std"], row["n"])


def _rows_of(
    rows: Sequence[dict[str, Any]], suite: str, domain: str, task: str, metric: str
) -> dict[str, Any]:
    return {
        r["variant"]: r
        for r in rows
        if (r["suite"], r["domain"], r["task"], r["metric"]) == (suite, domain, task, metric)
        and r["variant"] != "stl"
        and not is_trivial(r["variant"])
    }


def best_on_target(
    rows: Sequence[dict[str, Any]], suite: str = "sim2real", ours: str = "core_mtl"
) -> list[Claim]:
    """Paper Table 2: CORE-MTL is best on the target-domain metrics (one claim per headline metric).

    Reproduced when CORE-MTL beats every other method beyond Welch's 95% interval over seeds, not
    reproduced when some method beats it beyond the interval, inconclusive otherwise; the interval shown
    is against the best other method."""
    out = []
    for task, (metric, higher) in HEADLINE.items():
        if task == "all":
            continue
        vals = _rows_of(rows, suite, "target", task, metric)
        if ours not in vals or len(vals) < 2:
            continue
        mine = vals.pop(ours)
        holds, iv, best = _best_of(mine, vals, higher)
        out.append(
            Claim(
                f"{ours} is best on the {suite} target {task} {metric}",
                f"{ours} {_fmt(mine)}; best other {best} {_fmt(vals[best])} (n = {mine['n']} seeds)",
                holds,
                iv,
            )
        )
    return out


def _degradation(src: dict[str, Any], tgt: dict[str, Any], higher: bool) -> dict[str, Any]:
    """The source-to-target degradation as a row (mean, std, n): the std of a difference of two
    independent means' rows, sqrt(std_src^2 + std_tgt^2) -- wider than the paired one when a method's
    source and target scores move together over seeds, so the verdict errs towards inconclusive."""
    drop = _score(src["mean"], higher) - _score(tgt["mean"], higher)
    return {"mean": drop, "std": math.hypot(src["std"], tgt["std"]), "n": min(src["n"], tgt["n"])}


def smallest_gap(
    rows: Sequence[dict[str, Any]], suite: str = "sim2real", ours: str = "core_mtl"
) -> list[Claim]:
    """Paper Table 2: CORE-MTL has the smallest source-to-target degradation (per headline metric), with
    the verdict of :func:`best_on_target` on the degradations (:func:`_degradation`; lower is better)."""
    out = []
    for task, (metric, higher) in HEADLINE.items():
        if task == "all":
            continue
        src, tgt = (
            _rows_of(rows, suite, "source", task, metric),
            _rows_of(rows, suite, "target", task, metric),
        )
        gaps = {v: _degradation(src[v], tgt[v], higher) for v in src if v in tgt}
        if ours not in gaps or len(gaps) < 2:
            continue
        mine = gaps.pop(ours)
        holds, iv, best = _best_of(mine, gaps, higher=False)
        out.append(
            Claim(
                f"{ours} has the smallest {suite} {task} {metric} degradation (source -> target)",
                f"{ours} {_fmt(mine)}; smallest other {best} {_fmt(gaps[best])} (n = {mine['n']} seeds)",
                holds,
                iv,
            )
        )
    return out


#: the ablation's steps (paper Table 5), each adding one component to the one before
ABLATION_STEPS = ("vanilla", "ds", "ds+grounding", "ds+grounding+cka", "full")


def ablation_improves_step_by_step(rows: Sequence[dict[str, Any]], domain: str = "source") -> list[Claim]:
    """Paper Table 5: each component (DS, grounding, CKA, CFA) improves on the previous step.

    Per headline metric: reproduced when every step is better than the one before beyond Welch's 95%
    interval over seeds, not reproduced when some step is worse beyond it, inconclusive otherwise; the
    interval shown is the weakest step's (the lowest lower bound)."""
    out = []
    for task, (metric, higher) in HEADLINE.items():
        found = [summary_row(rows, "ablation", s, domain, task, metric) for s in ABLATION_STEPS]
        vals = [v for v in found if v is not None]
        if task == "all" or len(vals) < len(found):
            continue
        ivs = [_interval_in_claim_direction(b, a, higher) for a, b in zip(vals, vals[1:])]
        verdicts = [holds_by_interval(iv) for iv in ivs]
        holds = _all_hold(verdicts)
        known = [iv for iv in ivs if iv is not None]
        mark = {True: "better", False: "worse", None: "within the spread"}
        out.append(
            Claim(
                f"ablation improves step by step on {domain} {task} {metric}",
                " -> ".join(f"{v['mean']:.4g}" for v in vals)
                + f" (n = {vals[0]['n']} seeds; each step: "
                + ", ".join(mark[v] for v in verdicts)
                + ")",
                holds,
                min(known) if known else None,
            )
        )
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
        out.append(
            Claim(
                f"{name}'s time per epoch {'grows' if grows else 'stays flat'} from 10 to 40 tasks",
                f"{lo:.3g} s -> {hi:.3g} s (x{ratio:.2f})",
                holds,
            )
        )
    return out


# --------------------------------------------------------------------- out-of-distribution claims
def welch_interval(a: dict[str, Any], b: dict[str, Any], level: float = 0.95) -> tuple[float, float] | None:
    """Welch's t interval of ``mean_a - mean_b`` from two rows' mean, std and n (None when a side has
    fewer than 2 values)."""
    from scipy.stats import t as student_t

    if a["n"] < 2 or b["n"] < 2:
        return None
    va, vb = a["std"] ** 2 / a["n"], b["std"] ** 2 / b["n"]
    diff = a["mean"] - b["mean"]
    se = math.sqrt(va + vb)
    if se == 0:
        return diff, diff
    df = (va + vb) ** 2 / (va**2 / (a["n"] - 1) + vb**2 / (b["n"] - 1))
    half = float(student_t.ppf(0.5 + level / 2, df)) * se
    return diff - half, diff + half


def holds_by_interval(interval: tuple[float, float] | None) -> bool | None:
    """True when the interval lies wholly above 0, False when wholly below, None when it straddles 0
    (or there is no interval): the rule of every verdict (:data:`VERDICTS`)."""
    if interval is None or any(math.isnan(v) for v in interval):
        return None
    if interval[0] > 0:
        return True
    return False if interval[1] < 0 else None


def beats_each_baseline(
    rows: Sequence[dict[str, Any]], suite: str, domain: str, ours: str, baselines: Sequence[str]
) -> list[Claim]:
    """``ours`` beats each baseline on ``domain`` (per OOD headline metric): one claim per baseline, the
    interval on ``ours - baseline`` in the metric's better direction."""
    from coremtl_lite.bench.ood import OOD_METRICS

    out = []
    for task, (metric, higher) in OOD_METRICS.items():
        mine = summary_row(rows, suite, ours, domain, task, metric)
        for b in baselines:
            other = summary_row(rows, suite, b, domain, task, metric)
            if mine is None or other is None:
                continue
            iv = _interval_in_claim_direction(mine, other, higher)
            out.append(
                Claim(
                    f"{ours} beats {b} on {suite} {domain} {task} {metric}",
                    f"{ours} {format_mean_std(mine['mean'], mine['std'], mine['n'])} vs {b} "
                    f"{format_mean_std(other['mean'], other['std'], other['n'])} "
                    f"(n = {mine['n']}, {other['n']} seeds)",
                    holds_by_interval(iv),
                    iv,
                )
            )
    return out


def gap_grows_with_severity(
    rows: Sequence[dict[str, Any]], suite: str = "ood-severity", low: str = "shift:0", high: str = "shift:1"
) -> list[Claim]:
    """The gap grows with the shift: per method and OOD headline metric, the metric is worse on
    ``high`` than on ``low`` (interval on the degradation from ``low`` to ``high``)."""
    from coremtl_lite.bench.ood import OOD_METRICS

    out = []
    for variant in dict.fromkeys(
        r["variant"] for r in rows if r["suite"] == suite and not is_trivial(r["variant"])
    ):
        for task, (metric, higher) in OOD_METRICS.items():
            a, b = (
                summary_row(rows, suite, variant, low, task, metric),
                summary_row(rows, suite, variant, high, task, metric),
            )
            if a is None or b is None:
                continue
            iv = welch_interval(a, b) if higher else welch_interval(b, a)  # worse on high: positive
            drop = (a["mean"] - b["mean"]) * (1 if higher else -1)
            out.append(
                Claim(
                    f"{variant}'s {task} {metric} degrades from {low} to {high}",
                    f"{a['mean']:.4g} -> {b['mean']:.4g} (degradation {drop:+.3g})",
                    holds_by_interval(iv),
                    iv,
                )
            )
    return out


def gap_follows_bound(theorem: dict[str, Any] | None) -> list[Claim]:
    """Theorem 2.4, two claims per task (:func:`coremtl_lite.bench.ood.theorem24`'s numbers):

    * the gap grows with ``L_leak x W1`` over every run and severity (Pearson correlation, bootstrap
      interval over runs), with no point above the bound's line at ``lambda* = 0``. ``W1`` (the size
      of the shift) carries this correlation, so it shows that the gap follows the shift;
    * at the strongest shift, where every model sees the same ``W1``, a model with a larger
      ``L_leak`` has a larger gap (the correlation over runs of the gap with ``L_leak``): the part of
      the theorem that says less leakage means a smaller gap.
    """
    out = []
    theorem = theorem or {}
    for task, fit in theorem.get("fits", {}).items():
        iv = (fit["pearson_lo"], fit["pearson_hi"])
        out.append(
            Claim(
                f"the {task} OOD gap grows with L_leak x W1 over every severity (Theorem 2.4; carried by W1)",
                f"Pearson {fit['pearson']:.3g}, Spearman {fit['spearman']:.3g} over {fit['n']} points of "
                f"{fit['runs']} runs; bound K = {fit['K']:.3g} with lambda* = 0, "
                f"{fit['violations']} point(s) at x = 0 above it",
                holds_by_interval(iv),
                iv,
            )
        )
    for task, fit in theorem.get("across_models", {}).items():
        iv = (fit["pearson_lo"], fit["pearson_hi"])
        out.append(
            Claim(
                f"at shift:{fit['severity']:g}, a model with a larger L_leak has a larger {task} OOD gap "
                "(Theorem 2.4's L_leak factor)",
                f"Pearson {fit['pearson']:.3g}, Spearman {fit['spearman']:.3g} over {fit['runs']} runs",
                holds_by_interval(iv),
                iv,
            )
        )
    return out


def ood_claims(rows: Sequence[dict[str, Any]], theorem: dict[str, Any] | None = None) -> list[Claim]:
    """The out-of-distribution study's claims (module docstring): CORE-MTL beats each baseline on the
    target (``ood-rho``, at every training rho) and under the strongest shift (``ood-severity``,
    ``shift:1``); the gap grows with the severity; the gap follows ``L_leak x W1``."""
    from coremtl_lite.bench.suites import split_rho

    out = []
    sev = {r["variant"] for r in rows if r["suite"] == "ood-severity" and not is_trivial(r["variant"])}
    sev -= {"core_mtl"}
    out += beats_each_baseline(rows, "ood-severity", "shift:1", "core_mtl", sorted(sev))
    parsed = {
        r["variant"]: split_rho(r["variant"])
        for r in rows
        if r["suite"] == "ood-rho" and not is_trivial(r["variant"])
    }
    for rho in sorted({p[1] for p in parsed.values() if p}):
        others = sorted(v for v, p in parsed.items() if p and p[1] == rho and p[0] != "core_mtl")
        out += beats_each_baseline(rows, "ood-rho", "target", f"core_mtl@rho={rho:g}", others)
    return [*out, *gap_grows_with_severity(rows), *gap_follows_bound(theorem)]


def check_claims(rows: Sequence[dict[str, Any]], theorem: dict[str, Any] | None = None) -> list[Claim]:
    """Every check above on the rows available (and Theorem 2.4's numbers, when given)."""
    return [
        *best_on_target(rows),
        *smallest_gap(rows),
        *ablation_improves_step_by_step(rows, "source"),
        *ablation_improves_step_by_step(rows, "target"),
        *flat_cost(rows),
        *ood_claims(rows, theorem),
    ]
