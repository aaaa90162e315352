"""The ``coremtl-lite`` command: ``train``, ``evaluate``, ``demo``, ``bench``, ``methods``, ``assignments``.

Examples::

    coremtl-lite demo                                   # CORE-MTL vs equal weighting, ID/OOD table + HTML report
    coremtl-lite train --profile cpu train.method=pcgrad model.architecture=vanilla model.grounding=none
    coremtl-lite train --config runs/default/config.json --resume     # continue a run (also after a crash)
    coremtl-lite methods                                # every method with its options, defaults and paper
    coremtl-lite evaluate runs/default/best.pt --domains source,target,corrupt:fog:3
    torchrun --nproc_per_node=2 -m coremtl_lite.cli train --profile ci   # data parallel (gloo on CPU)

Overrides are ``section.key=value`` (see ``coremtl_lite.config``); the profile defaults to
``$COREMTL_PROFILE``, else ``gpu`` with CUDA and ``cpu`` without. Overrides may come before and
after the options (``train --resume optim.lr=1e-3`` and ``train optim.lr=1e-3 --resume``).

Known failures (a bad config value, an unreadable checkpoint, a run folder in use, a diverged run, a
full disk) end with one ``coremtl-lite <command>: error: ...`` line naming the file or key and exit
status 2; a traceback means a bug.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from coremtl_lite.config import (
    PAPER_PRESETS,
    PROFILES,
    Config,
    ConfigError,
    active_profile,
    apply_overrides,
    get_config,
    paper_config,
)
from coremtl_lite.experiments.recipes import CORE, Recipe, baseline

TRIVIAL = "trivial (constants)"  # majority class, mean depth, mean normal of the training split

#: the two runs of the demo, by their display names: CORE-MTL and the vanilla model with equal weighting,
#: the recipes of :mod:`coremtl_lite.experiments.recipes` (the benchmark suites' ``core_mtl`` and ``ew``)
DEMO_RUNS: dict[str, Recipe] = {"CORE-MTL": CORE, "EW (vanilla MTL)": baseline("ew")}


_EXAMPLES = """examples:
  coremtl-lite demo                                  CORE-MTL vs equal weighting: ID/OOD table + runs/demo/report.html
  coremtl-lite train --profile cpu train.method=pcgrad model.architecture=vanilla model.grounding=none
  coremtl-lite train --config runs/default/config.json --resume    continue a run (also after a crash)
  coremtl-lite methods                              every method: its options, their defaults, its paper
  coremtl-lite evaluate runs/default/best.pt --domains source,target,corrupt:fog:3
  torchrun --nproc_per_node=2 -m coremtl_lite.cli train --profile ci    data parallel (gloo on CPU, nccl on CUDA)

Overrides are section.key=value (data.*, model.*, loss.*, optim.*, train.*); an unknown key is an
error naming the nearest valid one; method options are train.method_options.<name>=value. The profile defaults to $COREMTL_PROFILE, else gpu with CUDA, else cpu.
"""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="coremtl-lite",
        description="CORE-MTL (Causal Orthogonal Representations for Multi-Task Learning) in miniature: "
        "train, evaluate, and a one-command demo.",
        epilog=_EXAMPLES + "\nRun 'coremtl-lite <command> --help' for the options of a command.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    from coremtl_lite import __version__

    p.add_argument("--version", action="version", version=f"coremtl-lite {__version__}")
    sub = p.add_subparsers(
        dest="command", metavar="{train,evaluate,demo,bench,methods,assignments,tutorials}"
    )

    prof_help = (
        f"configuration profile, one of {', '.join(PROFILES)} (default: $COREMTL_PROFILE, else gpu "
        "with CUDA, else cpu)"
    )
    t = sub.add_parser(
        "train",
        help="train one configuration (a profile or a config file, plus overrides)",
        description="Train one configuration with the one training loop, select the model on "
        "the validation split, evaluate the test split of data.eval_domains, and "
        "write last.pt, best.pt, history.json and results.json to train.out_dir.",
    )
    t.add_argument(
        "--config",
        type=Path,
        help="a JSON file written by Config.to_json (its profile field "
        "decides the profile; --profile is then ignored)",
    )
    t.add_argument("--profile", choices=PROFILES, help=prof_help)
    t.add_argument(
        "--preset",
        choices=sorted(PAPER_PRESETS),
        help="the paper's settings for one of its benchmarks (Appendix F, Table 7) on the paper profile",
    )
    t.add_argument("--resume", action="store_true", help="continue from <train.out_dir>/last.pt if it exists")
    t.add_argument(
        "--overwrite",
        action="store_true",
        help="replace a run already in train.out_dir (without it, or --resume, such a run is an error)",
    )
    t.add_argument(
        "overrides",
        nargs="*",
        metavar="section.key=value",
        help="config overrides, e.g. optim.lr=1e-3 train.method=pcgrad data.eval_domains=source,target",
    )

    e = sub.add_parser(
        "evaluate",
        help="evaluate a checkpoint on the test split of one or more domains",
        description="Rebuild a run from its checkpoint (its config is inside) and evaluate it.",
    )
    e.add_argument("checkpoint", type=Path, help="best.pt or last.pt of a run")
    e.add_argument(
        "--domains",
        help="comma-separated domains (default: the run's data.eval_domains), e.g. "
        "source,target,corrupt:fog:3",
    )
    e.add_argument("--split", choices=("test", "val"), default="test", help="which split (default: test)")
    e.add_argument("--reference", type=Path, help="results JSON of a single-task run: adds Δm%% per domain")
    e.add_argument("--output", type=Path, help="write the results to this JSON file")
    e.add_argument(
        "overrides",
        nargs="*",
        metavar="section.key=value",
        help="overrides of the stored config that do not change the model, e.g. train.device=cpu",
    )

    d = sub.add_parser(
        "demo",
        help="train CORE-MTL and equal weighting on ShadedScenes; ID/OOD table + HTML report",
        description="Train CORE-MTL (dual stream + grounding + CKA + CFA, equal task weights) "
        "and the vanilla multi-task model with equal weighting on ShadedScenes, "
        "evaluate both on the source (in-distribution) and target (shifted) test "
        "sets, print the table and write an HTML report with plotly figures.",
    )
    d.add_argument(
        "--profile",
        choices=PROFILES,
        help="profile (default: $COREMTL_PROFILE, else cpu -- the demo is sized for a laptop CPU)",
    )
    d.add_argument("--out", type=Path, default=Path("runs/demo"), help="output folder (default: runs/demo)")
    d.add_argument(
        "overrides",
        nargs="*",
        metavar="section.key=value",
        help="overrides applied to both runs, e.g. optim.epochs=5 train.seed=1",
    )
    b = sub.add_parser(
        "bench",
        help="run the paper's experiments in miniature (or on real data): tables + report",
        description="Run benchmark suites (id, sim2real, corruptions, colored, scalability, "
        "ablation, grounding, lambda-ind, lambda-cfa, ood-severity, ood-rho). Every variant is trained per "
        "seed with the one training loop, selected on validation and evaluated on "
        "the test split; finished runs are read back, so an interrupted bench "
        "resumes. Writes results.json, results.csv, report.html and metadata.json; with "
        "--finished-only it trains nothing and writes them from the finished runs, saying which are missing.",
    )
    b.add_argument(
        "--suites",
        default="id,sim2real,corruptions,ablation",
        help="comma-separated suites, or 'all' (default: id,sim2real,corruptions,ablation)",
    )
    b.add_argument("--profile", choices=PROFILES, help=prof_help)
    b.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (default: 0,1,2)")
    b.add_argument(
        "--suite-seeds",
        action="append",
        default=[],
        metavar="SUITE=SEEDS",
        help="a suite's own seeds instead of --seeds, e.g. sim2real=0,1,2,3,4 (repeatable)",
    )
    b.add_argument(
        "--methods",
        default=None,
        help="comma-separated baseline methods for the id/sim2real/corruptions tables (default: "
        "ew,uw,dwa,rlw,mgda,pcgrad,cagrad,nash_mtl,upgrad)",
    )
    b.add_argument("--out", type=Path, default=Path("runs/bench"), help="output folder (default: runs/bench)")
    b.add_argument(
        "--finished-only",
        action="store_true",
        help="train nothing: write the results from the runs already finished under --out and list the "
        "missing ones (pass the same --suites, --seeds and overrides as the run being reported on)",
    )
    b.add_argument(
        "overrides",
        nargs="*",
        metavar="section.key=value",
        help="overrides applied to every run, e.g. optim.epochs=4 data.train_size=1024",
    )

    m = sub.add_parser(
        "methods",
        help="list every multi-task method with its options, defaults and paper",
        description="Every name accepted by train.method, with the options train.method_options "
        "takes (type = default) and the paper it implements.",
    )
    m.add_argument("name", nargs="?", help="show one method only")

    a = sub.add_parser(
        "assignments",
        help="generate (or --check) the student versions of the course assignments",
        description="Strip the nbgrader solution regions and hidden tests from "
        "tutorials/assignments/*.ipynb into tutorials/assignments/student/.",
    )
    a.add_argument(
        "--check",
        action="store_true",
        help="write nothing; exit 1 with a diff when the student versions are out of date",
    )
    tu = sub.add_parser(
        "tutorials",
        help="copy the tutorial notebooks and assignments into a folder",
        description="Copy the tutorials and course assignments that ship with the package "
        "into DIR, to open them in JupyterLab.",
    )
    tu.add_argument("dir", type=Path, help="destination folder (created; must be empty unless --force)")
    tu.add_argument("--force", action="store_true", help="copy into a non-empty folder, overwriting files")
    return p


def _say(*args: Any) -> None:
    """Print on rank 0 only (under torchrun every process runs the command)."""
    if os.environ.get("RANK", "0") == "0":
        print(*args, flush=True)


#: what the ci profile's output says about itself (it trains for seconds on 32 px scenes)
CI_LABEL = "profile ci: smoke test, numbers are not meaningful"


def _label(profile: str) -> None:
    if profile == "ci":
        _say(f"[{CI_LABEL}]")


def _terminal_overrides(overrides: Sequence[str]) -> list[str]:
    """Progress bars whenever stderr is a terminal, in every profile (the ci profile turns them off for
    logs); an explicit ``train.progress=...`` override still wins."""
    return (["train.progress=true"] if sys.stderr.isatty() else []) + list(overrides)


def _warn_below_trivial(who: str, flags, prefix: str = "") -> None:
    """One warning line per ``(domain, task, delta%)`` where ``who`` does not beat the trivial predictor."""
    for domain, task, delta in flags:
        _say(
            f"{prefix}warning: {who} does not beat the trivial predictor on {domain} {task} ({delta:+.1f} % over it)"
        )


def _plain_warning(message, category, filename, lineno, line=None) -> str:
    """A warning as the command line shows it: one line, without the source path."""
    return f"warning: {message}\n"


def _config(args: argparse.Namespace) -> Config:
    if args.config is not None:
        if not args.config.is_file():
            raise ConfigError(f"config file {str(args.config)!r} does not exist")
        try:
            raw = json.loads(args.config.read_text())
        except json.JSONDecodeError as err:
            raise ConfigError(f"config file {str(args.config)!r} is not valid JSON: {err}") from err
        return apply_overrides(Config.from_dict(raw), args.overrides)
    if getattr(args, "preset", None):
        return paper_config(args.preset, args.overrides)
    return get_config(args.profile or active_profile(), _terminal_overrides(args.overrides))


def cmd_train(args: argparse.Namespace) -> int:
    from coremtl_lite.evaluate import format_results, save_results
    from coremtl_lite.experiments import train_and_evaluate
    from coremtl_lite.metrics import below_trivial
    from coremtl_lite.train import CheckpointError
    from coremtl_lite.train.run_dir import (
        RunDirError,
        RunLock,
        check_writable,
        describe_mismatch,
        existing_run,
        preflight,
        resume_mismatch,
    )

    if args.resume and args.overwrite:
        raise ConfigError(
            "--resume continues the run in train.out_dir and --overwrite replaces it; choose one"
        )
    cfg = _config(args)
    out = Path(cfg.train.out_dir)
    _label(cfg.profile)
    main_rank = os.environ.get("RANK", "0") == "0"
    for line in preflight(cfg):  # the whole config, before anything starts
        if main_rank:
            print(f"coremtl-lite train: warning: {line}", file=sys.stderr, flush=True)
    if main_rank:
        check_writable(out)
        found = existing_run(out)
        if found is not None and not (args.resume or args.overwrite):
            raise RunDirError(
                f"train.out_dir {str(out)!r} already holds a run ({found}); pass --resume to continue "
                "it, --overwrite to replace it, or choose another train.out_dir"
            )
        saved = out / "config.json"  # the run's config (the trainer checks last.pt itself again)
        if args.resume and (out / "last.pt").is_file() and saved.is_file():
            try:
                diff = resume_mismatch(json.loads(saved.read_text()), cfg.to_dict())
            except ValueError:
                diff = {}
            if diff:
                raise CheckpointError(describe_mismatch(out / "last.pt", diff))
    _say(f"training {cfg.train.method} on {cfg.data.dataset} (profile {cfg.profile}) -> {out}")
    if (
        args.overwrite and main_rank and not cfg.train.checkpoint_every
    ):  # the trainer writes no checkpoint and
        lock = RunLock(out)  # so claims no folder: clear the old run's files here
        lock.claim(resume=False, overwrite=True)
        lock.release()
    run = train_and_evaluate(
        cfg, resume=args.resume, overwrite=args.overwrite
    )  # test split of data.eval_domains
    if run.trainer.is_main:
        cfg.to_json(out / "config.json")
        save_results(
            out / "results.json",
            {
                "results": run.results,
                "trivial": run.trivial,
                "best_epoch": run.best_epoch,
                "seconds": run.seconds,
                "config": cfg.to_dict(),
            },
        )
    _say(f"done in {run.seconds:.1f} s; best validation epoch {run.best_epoch}")
    _say(format_results(run.results, trivial=run.trivial))
    _warn_below_trivial("the model", below_trivial(run.results, run.trivial, run.trainer.tasks))
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from coremtl_lite.evaluate import evaluate_checkpoint, format_results

    domains = [d for d in args.domains.split(",") if d] if args.domains else None
    payload = evaluate_checkpoint(
        args.checkpoint,
        domains=domains,
        split=args.split,
        reference=args.reference,
        output=args.output,
        overrides=args.overrides,
    )
    _say(format_results(payload["results"], payload.get("delta_m"), payload.get("trivial")))
    _warn_below_trivial("the model", payload.get("below_trivial", []))
    if args.output:
        _say(f"wrote {args.output}")
    return 0


def run_demo(
    profile: str | None = None,
    out: str | Path = "runs/demo",
    overrides: Sequence[str] = (),
    progress: bool | None = None,
) -> dict[str, Any]:
    """Train the :data:`DEMO_RUNS`, evaluate source and target, write ``results.json`` and ``report.html``.

    Each run is :func:`coremtl_lite.experiments.train_and_evaluate` in ``<out>/<recipe>-<run key>``
    (:func:`coremtl_lite.experiments.run_key`). The trivial predictors (:mod:`coremtl_lite.models.trivial`)
    are the first row of the table; a run that does not beat them on a task and domain is flagged
    with a warning line.

    Returns ``{"results": {run: {domain: {task: {metric}}}}, "rows": [...], "seconds": {run: s},
    "below_trivial": {run: [(domain, task, delta%)]}, "report": path}``.
    """
    from coremtl_lite.evaluate import save_results
    from coremtl_lite.experiments import run_key, train_and_evaluate
    from coremtl_lite.metrics import below_trivial
    from coremtl_lite.report import (
        curves_figure,
        id_ood_figure,
        id_ood_rows,
        id_ood_table,
        rows_html,
        write_report,
    )

    profile = profile or (os.environ.get("COREMTL_PROFILE") and active_profile()) or "cpu"
    out = Path(out)
    domains = ["source", "target"]
    results, histories, seconds, best = {}, {}, {}, {}
    base = ["data.dataset=shaded_scenes", "data.source_domain=source", "data.eval_domains=source,target"]
    if progress is None and sys.stderr.isatty():
        progress = True  # bars on a terminal in every profile
    if progress is not None:
        base.append(f"train.progress={str(progress).lower()}")
    _label(profile)
    for name, recipe in DEMO_RUNS.items():
        cfg = get_config(profile, [*base, *recipe.overrides, *overrides])
        cfg = apply_overrides(cfg, [f"train.out_dir={out / f'{recipe.name}-{run_key(cfg)}'}"])
        _say(
            f"[demo] {name}: profile {profile}, {cfg.optim.epochs} epochs, {cfg.data.train_size} scenes of "
            f"{cfg.data.image_size}px, batch {cfg.data.batch_size}"
        )
        run = train_and_evaluate(cfg, domains)
        results[name], histories[name], seconds[name], best[name] = (
            run.results,
            run.history,
            run.seconds,
            run.best_epoch,
        )
        _say(f"[demo] {name}: trained in {seconds[name]:.1f} s (best validation epoch {run.best_epoch})")
        results.setdefault(TRIVIAL, run.trivial)  # the same data for every run: one trivial reference
        directions = run.trainer.directions()
    results = {k: results[k] for k in [TRIVIAL, *DEMO_RUNS]}  # the trivial predictors first
    rows = id_ood_rows(results)
    table = id_ood_table(rows)
    _say(
        "\nTest metrics, best validation epoch; gap = target - source (ID -> OOD)"
        + (f" [{CI_LABEL}]" if profile == "ci" else "")
        + "\n"
        + table
    )
    flags = {name: below_trivial(results[name], results[TRIVIAL], directions) for name in DEMO_RUNS}
    for name, bad in flags.items():
        _warn_below_trivial(name, bad, prefix="[demo] ")
    report = out / "report.html"
    if os.environ.get("RANK", "0") == "0":
        save_results(
            out / "results.json",
            {
                "results": results,
                "rows": rows,
                "seconds": seconds,
                "best_epoch": best,
                "profile": profile,
                "below_trivial": {k: [list(f) for f in v] for k, v in flags.items()},
            },
        )
        note = (
            f"<p>Profile <b>{profile}</b>. Both runs: ShadedScenes, trained on the source domain, model "
            "selected on the source validation split, evaluated on the source (in-distribution) and target "
            "(shifted appearance) test sets. Gap = target - source. Training time: "
            + ", ".join(f"{k} {v:.0f} s" for k, v in seconds.items())
            + ".</p>"
        )
        write_report(
            report,
            "coremtl-lite demo: CORE-MTL vs equal weighting",
            [
                ("", note),
                ("ID / OOD table", rows_html(rows)),
                ("Source vs target", id_ood_figure(results)),
                ("Training curves", curves_figure(histories)),
            ],
        )
        _say(f"\nreport: {report}")
    return {"results": results, "rows": rows, "seconds": seconds, "below_trivial": flags, "report": report}


def cmd_demo(args: argparse.Namespace) -> int:
    run_demo(args.profile, args.out, args.overrides)
    return 0


def _seed_list(text: str, flag: str) -> list[int]:
    try:
        seeds = [int(s) for s in text.split(",") if s]
    except ValueError:
        raise SystemExit(f"{flag} {text!r}: seeds are comma-separated integers, e.g. 0,1,2") from None
    if not seeds:
        raise SystemExit(f"{flag} {text!r}: give at least one seed")
    return seeds


def cmd_bench(args: argparse.Namespace) -> int:
    from coremtl_lite.bench import DEFAULT_BASELINES, build_suites, pivot, run_bench
    from coremtl_lite.experiments import format_table

    suites = list(build_suites()) if args.suites == "all" else [s for s in args.suites.split(",") if s]
    seeds = _seed_list(args.seeds, "--seeds")
    suite_seeds = {}
    for item in args.suite_seeds:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise SystemExit(f"--suite-seeds {item!r}: expected SUITE=SEEDS, e.g. sim2real=0,1,2,3,4")
        suite_seeds[name] = _seed_list(value, f"--suite-seeds {name}")
    methods = tuple(m for m in args.methods.split(",") if m) if args.methods else DEFAULT_BASELINES
    profile = args.profile or active_profile()
    _label(profile)
    rows = run_bench(
        suites,
        profile=profile,
        seeds=seeds,
        out_dir=args.out,
        baselines=methods,
        overrides=args.overrides,
        finished_only=args.finished_only,
        suite_seeds=suite_seeds,
    )
    from coremtl_lite.bench.report import completeness, headline_metrics

    for suite in suites:
        sel = [r for r in rows if r["suite"] == suite]
        for domain in dict.fromkeys(r["domain"] for r in sel if r["domain"] != "-"):
            _say(f"\n## {suite} ({domain})\n")
            _say(format_table(*pivot(sel, domain, headline_metrics(sel)), style="markdown"))
    _label(profile)
    extra = ", ood_study.json" if (args.out / "ood_study.json").is_file() and "ood-severity" in suites else ""
    _say(f"\nwrote {args.out}/results.json, results.csv, report.html, metadata.json{extra}")
    note = completeness(json.loads((args.out / "metadata.json").read_text()))
    if note is not None:
        _say(f"\n{note}")
    return 0


def cmd_methods(args: argparse.Namespace) -> int:
    from coremtl_lite.methods.base import describe_methods

    rows = describe_methods()
    if args.name:
        rows = [r for r in rows if r["name"] == args.name]
        if not rows:
            from coremtl_lite.methods.base import _method_class

            _method_class(args.name)  # raises with the nearest name
    for r in rows:
        _say(f"{r['name']:<12} {r['family']:<10} {r['paper']}")
        options: dict[str, tuple[str | None, Any]] = r["options"]  # type: ignore[assignment]
        for key, (kind, default) in options.items():
            _say(f"    {key}: {kind or 'any'} = {default!r}")
    _say(
        "\nset options with train.method_options.<option>=value or train.method_options='{\"option\": value}'; "
        "torchjd:<Aggregator> runs any aggregator of the installed torchjd"
    )
    return 0


def cmd_assignments(args: argparse.Namespace) -> int:
    from coremtl_lite.assignments import main as assignments_main

    return int(assignments_main(["generate", *(["--check"] if args.check else [])]) or 0)


def cmd_tutorials(args: argparse.Namespace) -> int:
    """Copy the tutorials and assignments shipped with the package into ``args.dir``."""
    from coremtl_lite.assignments import tutorials_dir

    source, dest = tutorials_dir(), Path(args.dir)
    if dest.exists() and any(dest.iterdir()) and not args.force:
        raise FileExistsError(f"{dest} is not empty; choose a new folder or pass --force to overwrite")
    import shutil

    shutil.copytree(
        source,
        dest,
        dirs_exist_ok=True,
        ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "__init__.py", ".ipynb_checkpoints"),
    )
    n = len(list(dest.rglob("*.ipynb")))
    _say(f"copied {n} notebooks to {dest}; open them with: jupyter lab {dest}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``coremtl-lite`` console script; returns the exit code."""
    parser = _parser()
    args, extra = parser.parse_known_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    # overrides after an option (train --resume optim.lr=1e-3) arrive as unknown arguments
    stray = [a for a in extra if a.startswith("-") or "=" not in a or not hasattr(args, "overrides")]
    if stray:
        parser.error(f"unrecognized arguments: {' '.join(stray)}")
    if extra:
        args.overrides = [*args.overrides, *extra]
    from coremtl_lite.train import CheckpointError, NonFiniteLossError
    from coremtl_lite.train.run_dir import RunDirError

    handlers = {
        "train": cmd_train,
        "evaluate": cmd_evaluate,
        "demo": cmd_demo,
        "bench": cmd_bench,
        "methods": cmd_methods,
        "assignments": cmd_assignments,
        "tutorials": cmd_tutorials,
    }
    known = (ConfigError, CheckpointError, RunDirError, NonFiniteLossError, KeyError, ValueError, OSError)
    import warnings

    formatwarning, warnings.formatwarning = warnings.formatwarning, _plain_warning
    try:
        return handlers[args.command](args)
    except known as err:  # a failure the user can act on: one line naming the file or key, exit status 2
        msg = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"coremtl-lite {args.command}: error: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            f"coremtl-lite {args.command}: interrupted; continue a training run with --resume",
            file=sys.stderr,
        )
        return 130
    finally:
        warnings.formatwarning = formatwarning


if __name__ == "__main__":
    sys.exit(main())
