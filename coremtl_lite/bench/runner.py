"""Run suites: every variant x seed, resumable, aggregated as mean ± std, saved as JSON/CSV/HTML.

Every suite's table starts with the ``trivial`` rows: the trivial predictors (majority class, mean
depth, mean normal, ... fitted on each run's training split; :mod:`coremtl_lite.models.trivial`) on
the same test sets, so a number always stands next to what a constant scores.

Each run trains one configuration with the one training loop, selects the model on the validation
split only, then evaluates the test split of every domain of the suite
(:func:`coremtl_lite.experiments.train_and_evaluate`). A finished run is stored under
``<out>/runs/<key>.json`` (``key`` = :func:`coremtl_lite.experiments.run_key`, the hash of the resolved
configuration, seed included) and skipped when the suite runs again, so an interrupted benchmark
resumes where it stopped; with ``finished_only`` nothing is trained at all: the runs not finished yet
are left out and listed (:func:`missing_runs`), so a benchmark spread over sessions can be reported on
at any point. Means and standard deviations over seeds are
:func:`coremtl_lite.experiments.mean_std`; Delta m% is :func:`coremtl_lite.metrics.delta_m`.

A suite may also ask for *probes* (:data:`PROBES`): measurements of the trained model itself, taken
right after training and stored in the run's record under the probe's name (the ``ood-severity``
suite's ``ood_bound``: the numbers of Theorem 2.4). A stored run that lacks a probe its suite needs
is trained again, once, and its record then holds every probe.
"""

from __future__ import annotations

import csv
import json
import math
import os
import platform
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from coremtl_lite.bench.suites import Suite
from coremtl_lite.config import Config, get_config
from coremtl_lite.experiments import Recipe, expand, mean_std, run_key, train_and_evaluate
from coremtl_lite.metrics import delta_m

#: the variant name of the trivial predictors' rows in every suite's table
TRIVIAL = "trivial"


def trivial_variant(variant: str) -> str:
    """The trivial row that stands beside ``variant``: ``trivial``, or ``trivial@N`` beside a variant
    ``name@N``, whose runs see other data than the suite's other groups (the scalability suite's
    ``ew@10`` trains 10 attribute tasks, ``ew@40`` 40: each task count has its own constants)."""
    _, at, group = variant.partition("@")
    return f"{TRIVIAL}@{group}" if at else TRIVIAL


def is_trivial(variant: str) -> bool:
    """Whether ``variant`` names a row of the trivial predictors (:func:`trivial_variant`)."""
    return variant.partition("@")[0] == TRIVIAL


#: a function that trains ``cfg`` and returns ``{"results": {domain: {task: {metric: v}}}, "epoch_seconds": s}``
#: (and optionally ``"trivial"``: the trivial predictors' results in the same format). It is called as
#: ``run_fn(cfg, domains)``, and as ``run_fn(cfg, domains, probes=names)`` for a suite with probes (then its
#: record also holds ``{name: numbers}`` for each probe of :data:`PROBES`)
RunFn = Callable[..., dict[str, Any]]


def ood_bound_probe(trainer: Any) -> dict[str, Any]:
    """Theorem 2.4's numbers of a trained ShadedScenes run on its test split, with the weights selected
    on validation (:func:`~coremtl_lite.diagnostics.ood_bound.ood_bound_numbers`)."""
    from coremtl_lite.diagnostics.ood_bound import ood_bound_numbers

    cfg = trainer.cfg
    return ood_bound_numbers(
        trainer.load_selected_weights(),
        trainer.tasks,
        _test_scenes(trainer),
        rho=cfg.data.rho,
        batch_size=cfg.data.batch_size,
    )


def _test_scenes(trainer: Any) -> Callable[[str], Any]:
    """``domain -> the test set of that domain`` for a trained run (built as its own test sets are)."""
    import dataclasses

    from coremtl_lite.data import build_splits

    cfg = trainer.cfg
    return lambda domain: build_splits(
        dataclasses.replace(cfg.data, eval_domains=(domain,)), cfg.train.seed
    ).test[domain]


def robustness_probe(trainer: Any, n: int = 32) -> dict[str, Any]:
    """The feature-swap robustness ratios of a trained ShadedScenes run, colour jitter and source ->
    target on ``n`` test scenes, with what its two streams are
    (:func:`~coremtl_lite.diagnostics.robustness.robustness_numbers`)."""
    from coremtl_lite.diagnostics.robustness import robustness_numbers

    scenes = _test_scenes(trainer)
    source = scenes("source")
    return robustness_numbers(
        trainer.load_selected_weights(),
        source,
        scenes("target"),
        range(min(n, len(source))),
        seed=trainer.cfg.train.seed,
    )


#: the probes a suite can ask for: ``name -> (trained trainer -> JSON-ready numbers)``
PROBES: dict[str, Callable[[Any], dict[str, Any]]] = {
    "ood_bound": ood_bound_probe,
    "robustness": robustness_probe,
}


def train_and_record(cfg: Config, domains: Sequence[str], probes: Sequence[str] = ()) -> dict[str, Any]:
    """The default :data:`RunFn`: :func:`~coremtl_lite.experiments.train_and_evaluate`, as its JSON record,
    plus the numbers of each probe in ``probes`` (:data:`PROBES`) measured on the trained model."""
    run = train_and_evaluate(cfg, domains)
    return run.record() | {name: PROBES[name](run.trainer) for name in probes}


@dataclass
class Run:
    """One (variant, seed[, task]) training run of a suite."""

    suite: str
    variant: Recipe
    seed: int
    cfg: Config
    domains: tuple[str, ...]
    task: str | None = None  # the single task of a per-task (STL) run
    probes: tuple[str, ...] = ()  # measurements of the trained model its record must hold (PROBES)

    @property
    def key(self) -> str:
        """The run identity (:func:`~coremtl_lite.experiments.run_key`): suites that train the same thing share it."""
        return run_key(self.cfg)


def plan_runs(
    suite: Suite,
    profile: str,
    seeds: Iterable[int],
    overrides: Sequence[str] = (),
    out_root: str | os.PathLike = "runs/bench",
) -> list[Run]:
    """Every run a suite needs, with its full config (checked now, so a typo fails before training)."""
    runs = []
    for variant in suite.variants:
        for seed in seeds:
            # validation drives model selection during training; the test domains are evaluated once, at the end
            over = [
                *suite.base_overrides,
                *variant.overrides,
                *overrides,
                f"train.seed={seed}",
                f"data.eval_domains={suite.eval_domains[0]}",
            ]
            for task, cfg in expand(variant, get_config(profile, over)):  # per-task recipes: one run per task
                runs.append(Run(suite.name, variant, seed, cfg, suite.eval_domains, task, suite.probes))
    for run in runs:
        run.cfg.train.out_dir = str(Path(out_root) / "checkpoints" / run.key)
    return runs


def execute(
    runs: Sequence[Run],
    out_dir: str | os.PathLike,
    run_fn: RunFn = train_and_record,
    progress: bool = True,
    finished_only: bool = False,
) -> list[dict[str, Any]]:
    """Run (or read back) every run; return their records in order. With ``finished_only`` nothing is
    trained: a run whose stored record is missing, or lacks a domain or probe it needs, is left out
    (:func:`missing_runs` lists them)."""
    from tqdm.auto import tqdm

    store = Path(out_dir) / "runs"
    store.mkdir(parents=True, exist_ok=True)
    records = []
    bar = tqdm(runs, desc="bench", disable=not progress)
    for run in bar:
        path = store / f"{run.key}.json"
        bar.set_postfix_str(
            f"{run.suite}/{run.variant.name}/seed{run.seed}" + (f"/{run.task}" if run.task else "")
        )
        record: dict[str, Any] | None = json.loads(path.read_text()) if path.exists() else None
        stale = (
            record is None
            or not set(run.domains) <= set(record["results"])
            or not set(run.probes) <= set(record)
        )
        if stale and finished_only:
            continue
        if stale:
            # a run shared by suites is trained again for everything its stored record already held too
            # (its domains and probes), so the suites sharing it never take turns retraining it
            domains = tuple(dict.fromkeys([*run.domains, *(record or {}).get("results", {})]))
            probes = tuple(dict.fromkeys([*run.probes, *(p for p in PROBES if p in (record or {}))]))
            extra = {"probes": probes} if probes else {}
            outcome = run_fn(run.cfg, domains, **extra)
            # the code that trained it: runs of one benchmark folder may span several commits (it resumes)
            record = {"key": run.key, "config": run.cfg.to_dict(), "git_commit": git_commit(), **outcome}
            _write_json_atomic(path, record)
        assert record is not None  # read back or trained just now
        # a shared run is labelled by the suite and variant that read it now
        records.append(
            {
                **record,
                "key": run.key,
                "suite": run.suite,
                "variant": run.variant.name,
                "seed": run.seed,
                "task": run.task,
            }
        )
    return records


def missing_runs(runs: Sequence[Run], records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The runs of ``runs`` that have no record in ``records`` (what :func:`execute` with
    ``finished_only`` left out), as ``{"suite", "variant", "seed", "task", "key"}``."""
    done = {(r["suite"], r["key"]) for r in records}
    return [
        {"suite": r.suite, "variant": r.variant.name, "seed": r.seed, "task": r.task, "key": r.key}
        for r in runs
        if (r.suite, r.key) not in done
    ]


# ------------------------------------------------------------------------------------- aggregation
def merge_per_task(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Merge the single-task runs of one (variant, seed) into one record holding every task."""
    merged: dict[tuple, dict[str, Any]] = {}
    out = []
    for rec in records:
        if rec.get("task") is None:
            out.append(rec)
            continue
        key = (rec["suite"], rec["variant"], rec["seed"])
        if key not in merged:
            merged[key] = {**rec, "task": None, "results": {}, "epoch_seconds": 0.0}
            out.append(merged[key])
        target = merged[key]
        target["epoch_seconds"] += rec.get("epoch_seconds", 0.0)
        for domain, tasks in rec["results"].items():
            target["results"].setdefault(domain, {}).update(tasks)
    return out


def _trivial_records(suite: Suite, records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One pseudo-record per seed and group holding the trivial predictors' results (merged over the
    group's runs, so per-task runs contribute their task), labelled :func:`trivial_variant`."""
    by_seed: dict[tuple[int, str], dict[str, Any]] = {}
    for rec in records:
        name = trivial_variant(rec["variant"])
        for domain, tasks in (rec.get("trivial") or {}).items():
            out = by_seed.setdefault(
                (rec["seed"], name),
                {
                    "suite": suite.name,
                    "variant": name,
                    "seed": rec["seed"],
                    "results": {},
                    "epoch_seconds": 0.0,
                },
            )
            out["results"].setdefault(domain, {}).update(tasks)
    return list(by_seed.values())


def summarise(
    suite: Suite, records: Sequence[dict[str, Any]], directions: dict[str, dict[str, bool]]
) -> list[dict[str, Any]]:
    """Rows (variant, domain, task, metric, mean, std, n) plus Δm% and time per epoch."""
    records = merge_per_task([r for r in records if r["suite"] == suite.name])
    records = [*_trivial_records(suite, records), *records]
    stl = {(r["seed"], d): res for r in records if r["variant"] == "stl" for d, res in r["results"].items()}
    rows: list[dict[str, Any]] = []
    ordered: dict[str, Recipe] = {}  # each group's trivial row first, then the group's variants
    for v in suite.variants:
        ordered.setdefault(trivial_variant(v.name), Recipe(trivial_variant(v.name), ()))
        ordered[v.name] = v
    for variant in ordered.values():
        mine = [r for r in records if r["variant"] == variant.name]
        if not mine:
            continue
        for domain in suite.report_domains:
            values: dict[tuple[str, str], list[float]] = {}
            dms = []
            for rec in mine:
                res = rec["results"].get(domain, {})
                for task, metrics in res.items():
                    for metric, v in metrics.items():
                        values.setdefault((task, metric), []).append(float(v))
                accs = [m["acc"] for m in res.values() if "acc" in m]
                if len(accs) > 1:  # many attribute / classification tasks: their average accuracy
                    values.setdefault(("all", "avg_acc"), []).append(sum(accs) / len(accs))
                ref = stl.get((rec["seed"], domain))
                if ref is not None:
                    dms.append(delta_m(res, ref, directions, lenient=True))
            for (task, metric), vals in sorted(values.items()):
                mean, std = mean_std(vals)
                rows.append(
                    {
                        "suite": suite.name,
                        "variant": variant.name,
                        "domain": domain,
                        "task": task,
                        "metric": metric,
                        "mean": mean,
                        "std": std,
                        "n": len(vals),
                    }
                )
            if dms and not all(math.isnan(d) for d in dms):
                mean, std = mean_std([d for d in dms if not math.isnan(d)])
                rows.append(
                    {
                        "suite": suite.name,
                        "variant": variant.name,
                        "domain": domain,
                        "task": "all",
                        "metric": "delta_m%",
                        "mean": mean,
                        "std": std,
                        "n": len(dms),
                    }
                )
        if suite.timed and not is_trivial(variant.name):
            mean, std = mean_std([float(r["epoch_seconds"]) for r in mine])
            rows.append(
                {
                    "suite": suite.name,
                    "variant": variant.name,
                    "domain": "-",
                    "task": "all",
                    "metric": "seconds/epoch",
                    "mean": mean,
                    "std": std,
                    "n": len(mine),
                }
            )
    return rows


# -------------------------------------------------------------------------------------- metadata
def git_commit() -> str:
    """The commit of the package's own checkout (``"unknown"`` outside git), stored with every run."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=Path(__file__).resolve().parent,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out or "unknown"


def run_metadata(profile: str) -> dict[str, Any]:
    """Package versions, device, profile and git commit of a benchmark run."""
    import numpy
    import sklearn

    import coremtl_lite

    commit = git_commit()
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"cpu ({os.cpu_count()} cores)"
    return {
        "profile": profile,
        "coremtl_lite": coremtl_lite.__version__,
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "scikit-learn": sklearn.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": device,
        "git_commit": commit,
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }


def _write_json_atomic(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(obj, f, indent=1, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_rows(rows: Sequence[dict[str, Any]], out_dir: str | os.PathLike, name: str) -> tuple[Path, Path]:
    """Save summary rows as ``<name>.json`` and ``<name>.csv``."""
    out = Path(out_dir)
    json_path, csv_path = out / f"{name}.json", out / f"{name}.csv"
    _write_json_atomic(json_path, list(rows))
    with open(csv_path, "w", newline="") as f:
        writer = csv.DictWriter(
            f, fieldnames=["suite", "variant", "domain", "task", "metric", "mean", "std", "n"]
        )
        writer.writeheader()
        for row in rows:
            writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    return json_path, csv_path
