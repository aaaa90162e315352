"""Training throughput of the one loop: images/s, CORE-MTL / EW step cost, achieved GFLOP/s, memory.

For the vanilla model with equal weighting (EW) and for CORE-MTL (dual stream, hard grounding, CKA,
CFA at probability ``loss.cfa_prob`` -- active from the first step here), each in its own process
(so that its peak memory is its own), it prints:

* ``step img/s``: one ``Trainer.train_step`` (forward + objective + method.backward + clip + AdamW)
  on batches already in memory -- the loop's first ``--warmup + --steps`` batches, a different one
  each step, as in the loop -- the mean over ``--steps`` steps after ``--warmup`` steps (default 8,
  since the first steps pay one-off costs: allocator, kernel selection). It is a mean, like the
  loop's: CORE-MTL draws CFA on about half of its steps, so its step times have two modes and a
  median would pick one of them;
* ``loop img/s``: ``Trainer.fit`` epochs of ``--steps`` steps, data included, on a warm trainer (its
  second and third epochs together, :data:`WARM_EPOCHS`; the first pays one-off costs -- allocator,
  kernel selection -- and is printed apart as ``cold``). ``loop / step`` is the share of the step's
  throughput that the loop keeps;
* ``GFLOP/s``: the mean FLOPs of a step (``torch.utils.flop_counter`` over ``--steps`` more steps) over
  the mean step time, and its share of a large fp32 matmul's GFLOP/s measured in the same run, before
  and after the recipes (the larger of the two is the machine's ceiling);
* ``eval img/s``: ``Trainer.evaluate`` on the validation split and on the test domains (warm: their
  scenes already rendered once);
* ``peak RSS``: the process's peak resident memory after building the trainer and its two epochs
  (scene cache included), next to the peak after importing torch and the package alone;
* ``faults/step``: the page faults (minor) of one timed step: memory the system maps afresh. The
  trainer keeps freed memory for the next step (:func:`coremtl_lite.runtime.keep_freed_memory`); run
  with ``COREMTL_MALLOC_TUNING=0`` for glibc's defaults (thousands of faults per step).

The goals (issue 15) are printed beside each ratio. ``--rounds N`` measures the recipes N times,
taking turns, and adds the median and range of each figure over the rounds, the goals judged on the
medians: on a shared machine one run's figures can be 30% off the next one's. ``--uncached`` adds
the loop with the scene cache off, rendering every batch, ahead in a background thread
(``prefetch=2``) and in the loop (``prefetch=0``). Timings depend on the machine and its load:
report ``uptime`` with them.

Usage::

    python benchmarks/bench_train.py --profile cpu --steps 10
    python benchmarks/bench_train.py --profile cpu --steps 10 --uncached
    python benchmarks/bench_train.py --profile cpu --steps 10 --rounds 3
    python benchmarks/bench_train.py --profile cpu model.width=24      # any config override
"""

from __future__ import annotations

import argparse
import functools
import itertools
import json
import os
import resource
import statistics
import subprocess
import sys
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from coremtl_lite.config import get_config
from coremtl_lite.experiments import CORE_MTL, baseline
from coremtl_lite.runtime import keep_freed_memory
from coremtl_lite.train import Trainer
from coremtl_lite.train.evaluation import to_device

#: the demo's two recipes (coremtl_lite.experiments); CORE-MTL with CFA from the first step, so every step is timed
RECIPES = {
    "EW": baseline("ew").overrides,
    "CORE-MTL": CORE_MTL + ("loss.cfa_start=0", "loss.decomposition_warmup=0", "loss.cfa_max_rec_ratio=1e9"),
}
#: the goals of issue 15: loop / step, step GFLOP/s as a share of the matmul's (per recipe), CORE / EW step cost
GOAL_LOOP = 0.90
GOAL_MATMUL = {"EW": 0.50, "CORE-MTL": 0.45}
GOAL_CORE_OVER_EW = 1.4
#: warm epochs the loop is timed over (``--steps`` steps each): 2 x 10 steps of EW last about a second
WARM_EPOCHS = 2


def matmul_gflops(n: int = 2048, repeats: int = 5) -> float:
    """GFLOP/s of an ``n x n`` fp32 matmul (2 n^3 FLOPs), best of ``repeats``."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = min(_timed(lambda: a @ b) for _ in range(repeats))
    return 2 * n**3 / best / 1e9


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def recipe_config(name: str, profile: str, overrides: list[str], steps: int, out_dir: str):
    return get_config(
        profile,
        [
            *RECIPES[name],
            *overrides,
            "train.progress=false",
            "train.checkpoint_every=0",
            "train.eval_every=0",
            "train.grad_log_every=0",
            f"train.max_steps_per_epoch={steps}",
            f"train.out_dir={out_dir}",
        ],
    )


def loop_rates(cfg, warm_epochs: int = WARM_EPOCHS, **trainer_kwargs) -> tuple[float, float]:
    """img/s of a fresh trainer's first (cold) ``fit`` epoch and of its next ``warm_epochs`` epochs together."""
    trainer = Trainer(cfg, **trainer_kwargs)
    bs = cfg.data.batch_size
    cold = _timed(lambda: trainer.fit(stop_at_epoch=1))
    first = trainer.step
    warm = _timed(lambda: trainer.fit(stop_at_epoch=1 + warm_epochs))
    return first * bs / cold, (trainer.step - first) * bs / warm


def eval_rate(trainer: Trainer, split: str) -> float:
    """img/s of ``trainer.evaluate`` on ``split`` (all its domains), its scenes rendered beforehand."""
    trainer.evaluate(split=split, use_best=False)  # renders (and caches) the scenes once
    sets = (
        [trainer.splits.val]
        if split == "val"
        else [trainer.splits.test[d] for d in trainer.cfg.data.eval_domains]
    )
    n = sum(len(ds) for ds in sets)
    return n / _timed(lambda: trainer.evaluate(split=split, use_best=False)) if n else float("nan")


def bench(name: str, profile: str, overrides: list[str], steps: int, warmup: int, uncached: bool) -> dict:
    """Every number of one recipe (run it in a process of its own for its peak memory)."""
    cfg = recipe_config(name, profile, overrides, steps, f"runs/bench_train_{name.lower()}")
    import_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # torch and the package, loaded
    cold, loop = loop_rates(cfg)
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: kilobytes
    row = {"name": name, "cold_ips": cold, "loop_ips": loop, "peak_rss": peak_rss, "import_rss": import_rss}
    if uncached:
        row["ahead_ips"] = loop_rates(cfg, cache_bytes=0, prefetch=2)[1]
        row["inline_ips"] = loop_rates(cfg, cache_bytes=0, prefetch=0)[1]
    trainer = Trainer(cfg)
    # the loop's own first batches (scenes cached), a different one each step as in the loop; the same
    # batch over and over would time the step on data it has just seen
    batches = [
        to_device(b, trainer.device, trainer.channels_last)
        for b in itertools.islice(itertools.cycle(trainer.train_loader), warmup + steps)
    ]
    trainer.model.train()
    for b in batches[:warmup]:
        trainer.train_step(b, epoch=0)
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    times = [_timed(functools.partial(trainer.train_step, b, epoch=0)) for b in batches[warmup:]]
    faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults) / steps
    with FlopCounterMode(display=False) as counter:  # as many steps again: CFA on about as many of them
        for b in batches[warmup:]:
            trainer.train_step(b, epoch=0)
    step, flops = statistics.fmean(times), counter.get_total_flops() / steps
    bs = cfg.data.batch_size
    row.update(
        step_s=step,
        step_ips=bs / step,
        gflop_step=flops / 1e9,
        gflops=flops / step / 1e9,
        faults=faults,
        val_ips=eval_rate(trainer, "val"),
        test_ips=eval_rate(trainer, "test"),
    )
    return row


def run_recipe(name: str, args: argparse.Namespace) -> dict:
    """:func:`bench` of ``name`` in a child process (this script with ``--recipe``)."""
    cmd = [
        sys.executable,
        os.path.abspath(__file__),
        "--recipe",
        name,
        "--profile",
        args.profile,
        "--steps",
        str(args.steps),
        "--warmup",
        str(args.warmup),
        *(["--uncached"] if args.uncached else []),
        *args.overrides,
    ]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(
            f"bench_train.py --recipe {name} failed ({done.returncode}):\n{done.stderr[-3000:]}"
        )
    return json.loads(done.stdout.strip().splitlines()[-1])


def _goal(value: float, goal: float, at_least: bool = True, percent: bool = True) -> str:
    met = value >= goal if at_least else value <= goal
    shown = f"{100 * goal:g}%" if percent else f"{goal:g}"
    return f"(goal {'>=' if at_least else '<='} {shown}: {'met' if met else 'NOT met'})"


def report(rows: list[dict], ceiling: float) -> None:
    print(
        f"{'recipe':9s} {'step s':>7s} {'step img/s':>10s} {'loop img/s':>10s} {'cold':>7s} "
        f"{'GFLOP/step':>10s} {'GFLOP/s':>8s} {'faults/step':>11s} {'val img/s':>9s} {'test img/s':>10s} "
        f"{'peak RSS':>9s}"
    )
    for r in rows:
        print(
            f"{r['name']:9s} {r['step_s']:7.3f} {r['step_ips']:10.1f} {r['loop_ips']:10.1f} {r['cold_ips']:7.1f} "
            f"{r['gflop_step']:10.2f} {r['gflops']:8.1f} {r['faults']:11.0f} {r['val_ips']:9.1f} {r['test_ips']:10.1f} "
            f"{r['peak_rss'] / 2**20:6.0f} MiB"
        )
    print(
        f"fp32 matmul 2048^3: {ceiling:.1f} GFLOP/s; peak RSS after the imports alone: "
        f"{rows[0]['import_rss'] / 2**20:.0f} MiB"
    )
    for r in rows:
        share, ratio = r["gflops"] / ceiling, r["loop_ips"] / r["step_ips"]
        print(
            f"{r['name']:9s} loop / step {100 * ratio:5.1f}% {_goal(ratio, GOAL_LOOP)}; "
            f"step GFLOP/s / matmul {100 * share:5.1f}% {_goal(share, GOAL_MATMUL[r['name']])}"
        )
        if "ahead_ips" in r:
            print(
                f"{r['name']:9s} without the scene cache: loop {r['ahead_ips']:.1f} img/s rendering ahead "
                f"({100 * r['ahead_ips'] / r['step_ips']:.1f}% of step), {r['inline_ips']:.1f} img/s rendering "
                f"in the loop ({100 * r['inline_ips'] / r['step_ips']:.1f}%)"
            )
    cost = rows[1]["step_s"] / rows[0]["step_s"]
    print(
        f"CORE-MTL / EW step cost: {cost:.2f} {_goal(cost, GOAL_CORE_OVER_EW, at_least=False, percent=False)} (the paper: 3.45)"
    )


def summarise(rounds: list[list[dict]], ceiling: float) -> None:
    """The median over rounds of each figure, its range, and the goal beside the median; CORE-MTL /
    EW is paired within each round (the two ran a minute apart)."""

    def span(values: list[float], scale: float = 1.0, fmt: str = ".1f") -> str:
        v = [x * scale for x in values]
        return f"{statistics.median(v):{fmt}} (range {min(v):{fmt}}-{max(v):{fmt}})"

    print(f"\nover {len(rounds)} rounds, median (range):")
    for i, name in enumerate(RECIPES):
        rows = [r[i] for r in rounds]
        loop = [r["loop_ips"] / r["step_ips"] for r in rows]
        share = [r["gflops"] / ceiling for r in rows]
        print(
            f"{name:9s} step img/s {span([r['step_ips'] for r in rows])}; loop / step "
            f"{span(loop, 100)}% {_goal(statistics.median(loop), GOAL_LOOP)}; step GFLOP/s / matmul "
            f"{span(share, 100)}% {_goal(statistics.median(share), GOAL_MATMUL[name])}"
        )
    cost = [r[1]["step_s"] / r[0]["step_s"] for r in rounds]
    print(
        f"CORE-MTL / EW step cost {span(cost, fmt='.2f')} "
        f"{_goal(statistics.median(cost), GOAL_CORE_OVER_EW, at_least=False, percent=False)}"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--profile", default="cpu")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=8)
    p.add_argument("--uncached", action="store_true", help="also time the loop without the scene cache")
    p.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="measure the recipes this many times, taking turns, and print the medians (default 1)",
    )
    p.add_argument(
        "--recipe", choices=sorted(RECIPES), help="measure one recipe and print its numbers as JSON"
    )
    p.add_argument("overrides", nargs="*")
    args = p.parse_args()
    if args.rounds < 1:
        p.error(f"--rounds must be >= 1, got {args.rounds}")
    if args.recipe:
        print(
            json.dumps(
                bench(args.recipe, args.profile, args.overrides, args.steps, args.warmup, args.uncached)
            )
        )
        return
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, profile {args.profile} {args.overrides}, "
        f"load average {' '.join(f'{v:.2f}' for v in os.getloadavg())}, freed memory kept: "
        f"{keep_freed_memory()}"
    )
    ceilings = [matmul_gflops()]
    rounds = []
    for k in range(args.rounds):
        # the recipes take turns, in the other order every second round, so that a drift of the
        # machine's speed falls on both of them
        order = list(RECIPES) if k % 2 == 0 else list(reversed(RECIPES))
        done = {name: run_recipe(name, args) for name in order}
        rounds.append([done[name] for name in RECIPES])
        ceilings.append(matmul_gflops())
    # the ceiling is the largest: on a shared machine one measurement can dip (once 102 against 192
    # GFLOP/s a minute later), and a low ceiling would inflate every share
    print(
        "fp32 matmul before and after each round: "
        + ", ".join(f"{c:.1f}" for c in ceilings)
        + " GFLOP/s: the ceiling is the largest"
    )
    ceiling = max(ceilings)
    for k, rows in enumerate(rounds):
        if len(rounds) > 1:
            print(f"\nround {k + 1} of {len(rounds)}:")
        report(rows, ceiling)
    if len(rounds) > 1:
        summarise(rounds, ceiling)


if __name__ == "__main__":
    main()
