"""Training-step throughput of the default CPU model: equal weighting vs CORE-MTL (issue 4, "Performance").

Measures a full training step (forward, loss, backward, AdamW step) of the ``cpu`` profile model
(``coremtl_lite.get_config('cpu')``) on ShadedScenes at 64x64 with batch 32:

* EW: the vanilla shared-encoder model, equal weighting (sum of the task losses);
* CORE-MTL: the dual-stream model with hard grounding, L_ind, L_rec and CFA with probability 0.5
  (past the warm-up; the CFA draws come from the objective's generator, so both kinds of step occur);

and prints images/s, the CORE-MTL / EW step-cost ratio (goal <= 2.0; the paper reports 297 s / 86 s =
3.45), the FLOPs of each step (``torch.utils.flop_counter.FlopCounterMode``), the achieved GFLOP/s and,
for scale, the GFLOP/s of a large fp32 matmul measured in the same run.

The machine may be shared: every figure is the best of ``--repeats`` timing rounds (the least
disturbed), the load average is printed, and both wall time and process CPU time are reported
(CPU time / step is what one core would need, and is much less sensitive to other processes).

    .venv/bin/python benchmarks/bench_model.py                 # threads = torch default
    .venv/bin/python benchmarks/bench_model.py --threads 1 2   # compare thread counts
"""

from __future__ import annotations

import argparse
import json
import os
import time
import warnings

import torch
from torch.utils.flop_counter import FlopCounterMode

from coremtl_lite import get_config
from coremtl_lite.data import ShadedScenes
from coremtl_lite.losses import build_objective
from coremtl_lite.models import build_model
from coremtl_lite.tasks import tasks_from_info


def make_step(variant: str, cfg, tasks, batch, seed: int = 0):
    """A closure running one training step of ``variant`` ("ew" or "core"), and its model."""
    torch.manual_seed(seed)
    cfg.model.architecture = "dual_stream" if variant == "core" else "vanilla"
    cfg.model.grounding = "hard"
    cfg.loss.cfa_prob, cfg.loss.cfa_start, cfg.loss.cfa_max_rec_ratio = (
        0.5,
        0.0,
        1e9,
    )  # CFA whatever the decoder
    model = build_model(cfg.model, tasks)
    model.train()
    objective = build_objective(cfg.loss, tasks)
    progress = 1.0  # after the staged schedule: full weights, CFA on
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3, weight_decay=1e-4)
    gen = torch.Generator().manual_seed(seed)

    def step() -> float:
        out = objective(model, batch, progress, gen)
        loss = sum(out.task_losses.values())  # equal weighting
        if out.extra_loss is not None:
            loss = loss + out.extra_loss  # Eq. 16
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return out.logs.get("cfa_applied", 0.0)

    return step, model


def time_steps(step, steps: int, repeats: int) -> dict[str, float]:
    """Best-of-``repeats`` mean wall and CPU seconds per step over ``steps`` steps."""
    for _ in range(3):
        step()
    best_wall, best_cpu, cfa = float("inf"), float("inf"), []
    for _ in range(repeats):
        w, c = time.perf_counter(), time.process_time()
        for _ in range(steps):
            cfa.append(step())
        best_wall = min(best_wall, (time.perf_counter() - w) / steps)
        best_cpu = min(best_cpu, (time.process_time() - c) / steps)
    return {"wall_s": best_wall, "cpu_s": best_cpu, "cfa_rate": sum(cfa) / len(cfa)}


def step_flops(step, n: int = 8) -> float:
    """Mean FLOPs of one step over ``n`` steps (CFA steps cost more)."""
    with FlopCounterMode(display=False) as counter:
        for _ in range(n):
            step()
    return counter.get_total_flops() / n


def matmul_gflops(size: int = 2048, repeats: int = 5) -> float:
    """GFLOP/s of a ``size`` x ``size`` fp32 matmul (best of ``repeats``)."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * size**3 / best / 1e9


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=10, help="steps per timing round")
    parser.add_argument("--repeats", type=int, default=3, help="timing rounds (the best is kept)")
    parser.add_argument("--threads", type=int, nargs="*", default=None, help="torch thread counts to try")
    parser.add_argument("--json", default=None, help="write the figures to this JSON file")
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore")
    cfg = get_config("cpu")
    size, bs = cfg.data.image_size, cfg.data.batch_size
    data = ShadedScenes(size=size, length=bs, seed=0)
    batch = data.get_batch(list(range(bs)))
    tasks = tasks_from_info(data.task_info, cfg.data.tasks)
    print(
        f"cpu profile: {size}x{size}, batch {bs}, encoder {cfg.model.encoder} (width {cfg.model.width}), "
        f"torch {torch.__version__}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}"
    )
    results: dict = {"image_size": size, "batch_size": bs, "runs": []}
    steps = {v: make_step(v, cfg, tasks, batch) for v in ("ew", "core")}
    flops = {v: step_flops(s) for v, (s, _) in steps.items()}
    for threads in args.threads or [torch.get_num_threads()]:
        torch.set_num_threads(threads)
        mm = matmul_gflops()
        row = {"threads": threads, "matmul_gflops": mm, "load_avg": os.getloadavg()[0]}
        for v, (s, model) in steps.items():
            t = time_steps(s, args.steps, args.repeats)
            row[v] = {
                **t,
                "img_per_s": bs / t["wall_s"],
                "img_per_s_cpu": bs / t["cpu_s"],
                "gflop_per_step": flops[v] / 1e9,
                "gflops": flops[v] / t["wall_s"] / 1e9,
                "params": sum(p.numel() for p in model.parameters()),
            }
        row["ratio_wall"] = row["core"]["wall_s"] / row["ew"]["wall_s"]
        row["ratio_cpu"] = row["core"]["cpu_s"] / row["ew"]["cpu_s"]
        results["runs"].append(row)
        print(
            f"\nthreads={threads} (load average {row['load_avg']:.2f}); fp32 matmul 2048^3: {mm:.1f} GFLOP/s"
        )
        for v, name in (("ew", "EW (vanilla)"), ("core", "CORE-MTL (CFA p=0.5)")):
            r = row[v]
            print(
                f"  {name:22s} {r['img_per_s']:7.0f} img/s wall ({r['wall_s'] * 1e3:6.1f} ms/step), "
                f"{r['img_per_s_cpu']:6.0f} img/s per CPU-second, {r['gflop_per_step']:.2f} GFLOP/step, "
                f"{r['gflops']:.1f} GFLOP/s ({100 * r['gflops'] / mm:.0f}% of matmul), "
                f"{r['params'] / 1e3:.0f}k params"
                + (f", CFA on {100 * r['cfa_rate']:.0f}% of steps" if v == "core" else "")
            )
        print(
            f"  CORE-MTL / EW step cost: {row['ratio_wall']:.2f} (wall), {row['ratio_cpu']:.2f} (CPU time); "
            "goal <= 2.0, paper 3.45"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return results


if __name__ == "__main__":
    main()
