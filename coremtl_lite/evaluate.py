"""Evaluate trained models on several domains, summarise with Δm%, save the numbers as JSON.

* :func:`evaluate_checkpoint` -- rebuild a run from its checkpoint (``best.pt`` or ``last.pt``: the
  configuration travels inside) and evaluate the test split of any domains with the task meters
  (LibMTL semantics as in the paper §4.1; meters all-reduced under ``torchrun``);
* :func:`delta_m_by_domain` -- Δm% (paper §4.1) against a single-task reference, per domain;
* :func:`save_results` / :func:`load_results` -- the JSON files (``{"results": {domain: {task:
  {metric: value}}}, ...}``) that the CLI, the demo and the benchmarks write and read;
* :func:`format_results` -- a plain text table (:func:`coremtl_lite.experiments.format_table`).

The evaluation loop itself is :func:`coremtl_lite.train.evaluate_datasets` (the trainer uses it for
model selection, so it lives one layer down).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from coremtl_lite.experiments.tables import format_table
from coremtl_lite.metrics import below_trivial, delta_m
from coremtl_lite.train import Trainer, atomic_write, evaluate_datasets
from coremtl_lite.train.evaluation import Results

__all__ = [
    "Results",
    "delta_m_by_domain",
    "evaluate_checkpoint",
    "evaluate_datasets",
    "format_results",
    "load_results",
    "save_results",
]


def delta_m_by_domain(
    results: Results, reference: Mapping[str, Any], directions: Mapping[str, Mapping[str, bool]]
) -> dict[str, float]:
    """Δm% of every domain of ``results`` against the single-task ``reference`` (paper §4.1; positive = better).

    ``reference`` is either per domain (``{domain: {task: {metric: v}}}``, matched by domain name) or
    one ``{task: {metric: v}}`` used for every domain.
    """
    single = bool(set(reference) & set(directions))  # keyed by task: one reference for every domain
    out = {}
    for domain, res in results.items():
        if single:
            ref = reference
        elif domain in reference:
            ref = reference[domain]
        else:
            raise KeyError(f"the reference has no entry for domain {domain!r} (it has {sorted(reference)})")
        out[domain] = delta_m(res, ref, directions)
    return out


def save_results(path: str | os.PathLike, payload: Mapping[str, Any]) -> Path:
    """Write ``payload`` (``{"results": {...}, ...}``) as indented JSON, atomically; NaN stays NaN."""
    if "results" not in payload:
        raise KeyError(f"save_results({str(path)!r}): the payload needs a 'results' key")
    text = json.dumps(payload, indent=2, allow_nan=True, default=_jsonable)
    return atomic_write(path, lambda fh: fh.write(text.encode("utf-8")))


def load_results(path: str | os.PathLike) -> dict[str, Any]:
    """Read a file written by :func:`save_results` (or a bare ``{domain: {task: {metric: v}}}``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"results file {str(path)!r} does not exist")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"results file {str(path)!r} is not valid JSON: {err}") from err
    payload = data if isinstance(data, dict) and "results" in data else {"results": data}
    results = payload["results"]
    if not isinstance(results, dict) or not all(isinstance(v, dict) for v in results.values()):
        raise ValueError(
            f"results file {str(path)!r} holds no {{domain or task: {{...}}}} results "
            f"(found {type(results).__name__})"
        )
    return payload


def _jsonable(value: Any) -> Any:
    if isinstance(value, (np.ndarray, np.generic, torch.Tensor)):
        return value.tolist()
    if isinstance(value, (set, tuple)):
        return list(value)
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


def evaluate_checkpoint(
    checkpoint: str | os.PathLike,
    domains: Sequence[str] | None = None,
    split: str = "test",
    reference: str | os.PathLike | Mapping[str, Any] | None = None,
    output: str | os.PathLike | None = None,
    overrides: Sequence[str] = (),
) -> dict[str, Any]:
    """Evaluate the weights of ``checkpoint`` and return ``{"results", "trivial", "below_trivial",
    "delta_m"?, "checkpoint", "epoch", "split", "config"}`` (also written to ``output`` as JSON when
    given, by rank 0). ``trivial`` holds the trivial predictors' results on the same data (majority
    class, mean depth, mean normal of the run's training split) and ``below_trivial`` the
    ``(domain, task, delta%)`` where the model does not beat them.

    ``domains`` default to the run's ``data.eval_domains``; any ShadedScenes domain (``target``,
    ``corrupt:fog:3``, ...) works. ``reference`` (a results file or dict of a single-task run) adds
    Δm% per domain. ``overrides`` adjust the rebuilt config (e.g. ``train.device=cpu``).
    """
    trainer = Trainer.from_checkpoint(Path(checkpoint), overrides=["train.progress=false", *overrides])
    results = trainer.evaluate(domains=domains, split=split, use_best=False)
    trivial = trainer.evaluate_trivial(domains=domains, split=split)  # the constants the model must beat
    payload: dict[str, Any] = {
        "results": results,
        "trivial": trivial,
        "below_trivial": [list(f) for f in below_trivial(results, trivial, trainer.tasks)],
        "checkpoint": str(checkpoint),
        "epoch": trainer.epoch,
        "split": split,
        "config": trainer.cfg.to_dict(),
    }
    if reference is not None:
        ref = load_results(reference)["results"] if not isinstance(reference, Mapping) else dict(reference)
        ref = ref.get("results", ref)
        payload["delta_m"] = delta_m_by_domain(results, ref, trainer.directions())
    if output is not None and trainer.is_main:
        save_results(output, payload)
    return payload


def format_results(
    results: Results, delta: Mapping[str, float] | None = None, trivial: Results | None = None
) -> str:
    """A text table: one row per domain, one column per task metric (and Δm% when given); with
    ``trivial``, each domain's row is followed by the trivial predictors' row on the same data."""
    if not results:
        return "(no results)"
    cols = [(t, m) for t, ms in next(iter(results.values())).items() for m in ms]
    header = ["domain", *[f"{t}/{m}" for t, m in cols]] + (["Δm%"] if delta else [])
    rows = []
    for domain, res in results.items():
        row = [domain] + [_num(res.get(t, {}).get(m, math.nan)) for t, m in cols]
        if delta:
            row.append(_num(delta.get(domain, math.nan)))
        rows.append(row)
        if trivial and domain in trivial:
            rows.append(
                [f"  trivial ({domain})"]
                + [_num(trivial[domain].get(t, {}).get(m, math.nan)) for t, m in cols]
                + ([""] if delta else [])
            )
    return format_table(header, rows)


def _num(v: float) -> str:
    return "nan" if isinstance(v, float) and math.isnan(v) else f"{v:.4f}"
