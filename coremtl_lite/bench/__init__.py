"""The reproduction suite: the paper's experiments in miniature on ShadedScenes, and at full scale on
the real datasets (``coremtl-lite bench``). See :mod:`.suites` for what each suite trains."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from coremtl_lite.bench.ood import ood_study
from coremtl_lite.bench.report import pivot, write_html
from coremtl_lite.bench.runner import (
    RunFn,
    execute,
    missing_runs,
    plan_runs,
    run_metadata,
    summarise,
    train_and_record,
    write_rows,
)
from coremtl_lite.bench.suites import DEFAULT_BASELINES, Suite, build_suites

__all__ = ["DEFAULT_BASELINES", "Suite", "build_suites", "committed_results", "pivot", "run_bench"]

#: where the results of the committed ``cpu``-profile benchmark run live (see README)
COMMITTED = Path(__file__).resolve().parents[2] / "results" / "cpu"


def committed_results(folder: str | os.PathLike = COMMITTED) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The summary rows and metadata of a finished benchmark run (default: the committed cpu run)."""
    folder = Path(folder)
    rows_path, meta_path = folder / "results.json", folder / "metadata.json"
    for path in (rows_path, meta_path):
        if not path.is_file():
            raise FileNotFoundError(
                f"missing benchmark file {path}: run 'coremtl-lite bench --out {folder}' first"
            )
    return json.loads(rows_path.read_text()), json.loads(meta_path.read_text())


def run_bench(
    suites: Sequence[str] = ("id",),
    profile: str = "cpu",
    seeds: Sequence[int] = (0, 1, 2),
    out_dir: str | os.PathLike = "runs/bench",
    baselines: Sequence[str] = DEFAULT_BASELINES,
    overrides: Sequence[str] = (),
    run_fn: RunFn = train_and_record,
    progress: bool = True,
    finished_only: bool = False,
    suite_seeds: Mapping[str, Sequence[int]] | None = None,
) -> list[dict[str, Any]]:
    """Run the named suites (finished runs are read back, not retrained) and write
    ``<out_dir>/results.json``, ``results.csv``, ``report.html`` and ``metadata.json``; with the
    ``ood-severity`` suite also ``ood_study.json`` (:func:`coremtl_lite.bench.ood.ood_study`: every
    run's OOD gap, L_leak and W1 per severity, the bound's slope and the correlations, and the
    robustness-ratio table).

    With ``finished_only`` nothing is trained: the same files are written from the runs already
    finished under ``out_dir`` (a benchmark spread over sessions, reported part way). The metadata
    always says how complete the results are: ``runs_planned`` (how many runs the suites need),
    ``missing_runs`` (each one not finished: suite, variant, seed, task, key) and ``complete``; each
    row's ``n`` is the number of seeds its mean is over. ``run_commits`` counts the runs reported per
    commit that trained them (a resumed benchmark may span commits; ``"unrecorded"``: a run stored
    before its record held its commit).

    ``suite_seeds`` gives a suite its own seeds instead of ``seeds`` (the paper's headline rows,
    ``sim2real``, use 5 where the rest use 3); the metadata records it.

    Returns the summary rows (suite, variant, domain, task, metric, mean, std, n).
    """
    from coremtl_lite.data import build_splits
    from coremtl_lite.tasks import tasks_from_info

    available = build_suites(tuple(baselines))
    unknown = [s for s in suites if s not in available]
    if unknown:
        raise KeyError(f"unknown suite(s) {unknown}; choose from {', '.join(available)}")
    suite_seeds = dict(suite_seeds or {})
    if len(seeds) < 1 or any(len(s) < 1 for s in suite_seeds.values()):
        raise ValueError("run_bench needs at least one seed for every suite")
    stray = [s for s in suite_seeds if s not in suites]
    if stray:
        raise KeyError(f"suite_seeds names suite(s) {stray} that are not run; run {', '.join(suites)}")
    out = Path(out_dir)
    start = time.perf_counter()
    rows: list[dict[str, Any]] = []
    probed: list[dict[str, Any]] = []  # the records holding probe numbers (Theorem 2.4's)
    missing: list[dict[str, Any]] = []  # the planned runs not finished (finished_only)
    planned = 0
    commits: dict[str, int] = {}  # the commits that trained the runs reported, with how many runs each
    for name in suites:
        suite = available[name]
        runs = plan_runs(suite, profile, suite_seeds.get(name, seeds), overrides, out_root=out)
        records = execute(runs, out, run_fn=run_fn, progress=progress, finished_only=finished_only)
        planned += len(runs)
        missing += missing_runs(runs, records)
        for rec in records:
            c = rec.get("git_commit", "unrecorded")  # runs stored before records held their commit
            commits[c] = commits.get(c, 0) + 1
        widest = max(runs, key=lambda r: len(r.cfg.data.tasks)).cfg.data
        task_info = build_splits(widest, seed=0).train.task_info
        tasks = tasks_from_info(task_info, sorted({t for r in runs for t in r.cfg.data.tasks}))
        directions = {t.name: dict(t.directions) for t in tasks}
        rows += summarise(suite, records, directions)
        if suite.probes:
            probed += records
    meta = run_metadata(profile) | {
        "suites": list(suites),
        "seeds": list(seeds),
        "suite_seeds": {name: list(s) for name, s in suite_seeds.items()},
        "overrides": list(overrides),
        "seconds": round(time.perf_counter() - start, 1),
        "finished_only": finished_only,
        "runs_planned": planned,
        "missing_runs": missing,
        "complete": not missing,
        "run_commits": commits,
    }
    write_rows(rows, out, "results")
    (out / "metadata.json").write_text(json.dumps(meta, indent=1))
    study = ood_study(probed) if probed else None
    if study is not None:
        (out / "ood_study.json").write_text(json.dumps(study, indent=1))
    else:  # the folder's files describe this call only
        (out / "ood_study.json").unlink(missing_ok=True)
    write_html(rows, meta, out / "report.html", study)
    return rows
