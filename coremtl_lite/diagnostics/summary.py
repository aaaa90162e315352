"""Comparison tables for tutorials 04-05: several models, one diagnostic each, the paper's numbers beside.

Each ``*_rows`` function returns a list of flat dicts (one per model and setting) and
:func:`format_rows` prints them as a fixed-width text table. The paper's values are kept in
:data:`PAPER_TABLE3`, labelled as the paper's (they come from NYUv2/Cityscapes-scale models, not
ShadedScenes).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
from torch import nn

from coremtl_lite.diagnostics.leakage import domain_risks, estimate_leakage, residual_w1
from coremtl_lite.diagnostics.probes import linear_probes
from coremtl_lite.diagnostics.robustness import (
    color_jitter,
    cross_domain_pair,
    robustness_ratio,
    stream_names,
)
from coremtl_lite.diagnostics.streams import model_streams
from coremtl_lite.experiments.tables import format_table

__all__ = ["PAPER_TABLE3", "format_rows", "leakage_rows", "probe_rows", "robustness_rows"]

#: paper Table 3 (§4.4.1): (Δz_s, Δz_p, ratio) -- the paper's numbers, raw (unnormalised)
PAPER_TABLE3 = {"intra": (0.1997, 0.4158, 2.08), "cross": (0.2889, 0.9466, 3.28)}


def robustness_rows(
    models: Mapping[str, nn.Module],
    source,
    target,
    indices: Sequence[int],
    seed: int = 0,
    vanilla_split: str = "pooled",
    pool_semantic: bool = False,
) -> list[dict]:
    """Robustness ratios (Table 3) of every model, intra-domain (colour jitter) and cross-domain.

    ``source``/``target`` are ShadedScenes with the same seed and offset (the same scenes in two domains).
    The ``streams`` column says which two codes each ratio compares (a vanilla model has no streams:
    :func:`~coremtl_lite.diagnostics.robustness.stream_names`); compare CORE-MTL with a dual-stream model
    trained without its losses for like with like.
    """
    clean, shifted = cross_domain_pair(source, target, indices)
    jittered = dict(clean, image=color_jitter(clean["image"], seed=seed))
    rows = []
    for name, model in models.items():
        streams = model_streams(model, vanilla_split=vanilla_split, pool_semantic=pool_semantic)
        for setting, other in (("intra", jittered), ("cross", shifted)):
            r = robustness_ratio(streams, clean, other)
            rows.append(
                {
                    "model": name,
                    "setting": setting,
                    "Δz_s": r.delta_s,
                    "Δz_p": r.delta_p,
                    "ratio": r.ratio,
                    "raw Δz_s": r.delta_s_raw,
                    "raw Δz_p": r.delta_p_raw,
                    "raw ratio": r.raw_ratio,
                    "paper ratio": PAPER_TABLE3[setting][2],
                    "streams": stream_names(model, clean["image"], vanilla_split),
                }
            )
    return rows


def leakage_rows(
    models: Mapping[str, nn.Module],
    tasks: Sequence,
    source,
    target,
    indices: Sequence[int],
    quantile: float = 0.9,
    vanilla_split: str = "pooled",
) -> list[dict]:
    """Leakage estimates (Eq. 8), the W1 shift of the residual factors, and the measured OOD gap (Thm 2.4).

    Per model: ``L̂`` (sup and quantile) for residual perturbations towards the target domain and within
    the source domain, the residual stream's sensitivity, ``W1`` between the domains' normalised residual
    vectors, ``L̂ · W1`` (Theorem 2.4's bound term up to the constant K) and the measured gap
    ``R_target - R_source`` of the summed task losses on the same scenes.
    """
    w1 = residual_w1(source, target, indices)
    src_batch, tgt_batch = cross_domain_pair(source, target, indices)
    rows = []
    qk = f"leak_q{int(quantile * 100)}"
    for name, model in models.items():
        streams = model_streams(model, vanilla_split=vanilla_split)
        cross = estimate_leakage(streams, source, indices, donor_scenes=target, quantile=quantile)
        intra = estimate_leakage(streams, source, indices, quantile=quantile)
        risks = domain_risks(model, tasks, {"source": src_batch, "target": tgt_batch})
        gap = risks["target"]["total"] - risks["source"]["total"]
        rows.append(
            {
                "model": name,
                "L̂ sup (→target)": cross.sup,
                f"L̂ q{int(quantile * 100)} (→target)": cross.summary[qk],
                "L̂ sup (in-domain)": intra.sup,
                "z_p sens. q90 (→target)": cross.summary[f"p_sens_q{int(quantile * 100)}"],
                "W1(r)": w1,
                "L̂·W1": cross.sup * w1,
                "R_source": risks["source"]["total"],
                "R_target": risks["target"]["total"],
                "gap": gap,
            }
        )
    return rows


def probe_rows(
    models: Mapping[str, nn.Module],
    fit_batch: dict,
    score_batch: dict,
    num_classes: int | None = None,
    vanilla_split: str = "pooled",
) -> list[dict]:
    """Linear-probe R² of each stream for the semantic and residual factors, per model."""
    rows = []
    for name, model in models.items():
        table = linear_probes(
            model_streams(model, vanilla_split=vanilla_split), fit_batch, score_batch, num_classes=num_classes
        ).table()
        for stream in ("z_s", "z_p"):
            rows.append(
                {
                    "model": name,
                    "stream": stream,
                    "R² semantic": table[stream]["semantic"],
                    "R² residual": table[stream]["residual"],
                }
            )
    return rows


def format_rows(rows: Sequence[Mapping], digits: int = 4) -> str:
    """A fixed-width text table of flat dicts (floats with ``digits`` significant digits), every column
    right-aligned (:func:`~coremtl_lite.experiments.format_table`)."""
    if not rows:
        return "(no rows)"
    cols = list(rows[0])

    def fmt(v) -> str:
        if isinstance(v, float):
            if math.isinf(v) or math.isnan(v):
                return str(v)
            return f"{v:.{digits}g}"
        if isinstance(v, torch.Tensor):
            return fmt(float(v))
        return str(v)

    return format_table(cols, [[fmt(r.get(c, "")) for c in cols] for r in rows], left=0)
