"""Wall time of each tutorial and assignment notebook, with the goal beside it.

    .venv/bin/python benchmarks/bench_tutorials.py                      # every notebook, cpu profile
    .venv/bin/python benchmarks/bench_tutorials.py tutorials/07_spurious_correlations.ipynb

Executes each notebook as a reader runs it: a fresh kernel, the notebook's folder as the working
directory, ``COREMTL_PROFILE`` set to ``--profile`` (default ``cpu``), the notebooks in the order given
(by default every tutorial in order, then the course assignments). It runs them in a copy of
``tutorials/`` in a temporary folder, so the run cache (``runs/``) starts empty -- a notebook that
reads an earlier notebook's runs gets them only if that notebook ran before it here -- and no stored
notebook or run is touched. The kernel imports the package from this checkout.

Prints each notebook's wall time next to the goal of issue 15 (under 3 minutes each in the ``cpu``
profile, on a quiet machine), with the load average before and after: the machine is shared, so
compare figures measured in one run. A notebook that fails stops the run with its name and the
error. The README's table of tutorial wall times comes from this script.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TUTORIALS = ROOT / "tutorials"
GOAL_SECONDS = 180.0  # issue 15: every tutorial's cpu profile under 3 minutes


def _execute_function():
    """``execute`` of ``scripts/execute_notebooks.py`` (the one way this project runs a notebook)."""
    spec = importlib.util.spec_from_file_location(
        "execute_notebooks", ROOT / "scripts" / "execute_notebooks.py"
    )
    if spec is None or spec.loader is None:
        raise ImportError("cannot load scripts/execute_notebooks.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("execute_notebooks", module)
    spec.loader.exec_module(module)
    return module.execute


def default_notebooks() -> list[Path]:
    """Every tutorial in order, then the course assignments (the instructors' versions, with answers)."""
    return sorted(TUTORIALS.glob("*.ipynb")) + sorted((TUTORIALS / "assignments").glob("a*.ipynb"))


def _resolve(arg: str) -> Path:
    path = Path(arg)
    path = path if path.is_absolute() else Path.cwd() / path
    path = path.resolve()
    if path.suffix != ".ipynb" or not path.is_file():
        raise SystemExit(f"bench_tutorials: {arg} is not a notebook file")
    try:
        path.relative_to(TUTORIALS)
    except ValueError:
        raise SystemExit(f"bench_tutorials: {arg} is not under {TUTORIALS}") from None
    return path


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("notebooks", nargs="*", help="notebooks under tutorials/ (default: all, in order)")
    parser.add_argument("--profile", default="cpu", help="COREMTL_PROFILE for the kernels (default cpu)")
    parser.add_argument("--timeout", type=int, default=1800, help="seconds a cell may run (default 1800)")
    args = parser.parse_args(argv)
    notebooks = [_resolve(a) for a in args.notebooks] or default_notebooks()

    import nbformat

    execute = _execute_function()
    # the kernels import the package from this checkout
    os.environ["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])
    print(f"profile {args.profile}, {len(notebooks)} notebook(s), load average {_load()}")
    if args.profile == "ci":
        print("the ci profile is a smoke test: these times say nothing about the goal")
    times: list[tuple[str, float]] = []
    with tempfile.TemporaryDirectory(prefix="coremtl-tutorials-") as tmp:
        copy = Path(tmp) / "tutorials"
        shutil.copytree(
            TUTORIALS, copy, ignore=shutil.ignore_patterns("runs", ".ipynb_checkpoints", "student")
        )
        for path in notebooks:
            rel = path.relative_to(TUTORIALS)
            target = copy / rel
            nb = nbformat.read(target, as_version=4)
            start = time.perf_counter()
            try:
                execute(nb, target.parent, args.profile, args.timeout)
            except Exception as err:  # noqa: BLE001 -- name the notebook, then stop
                print(f"{rel}: FAILED after {time.perf_counter() - start:.0f} s: {type(err).__name__}: {err}")
                return 1
            seconds = time.perf_counter() - start
            times.append((str(rel), seconds))
            verdict = "met" if seconds <= GOAL_SECONDS else "NOT met"
            print(f"{str(rel):45s} {seconds:7.1f} s   (goal <= {GOAL_SECONDS:.0f} s: {verdict})", flush=True)
    slow = [name for name, s in times if s > GOAL_SECONDS]
    print(f"total {sum(s for _, s in times):.0f} s; load average {_load()}")
    print(f"over the goal: {', '.join(slow)}" if slow else "every notebook within the goal")
    return 0


if __name__ == "__main__":
    sys.exit(main())
