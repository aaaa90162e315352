"""Training throughput of the one loop: images/s, CORE-MTL / EW step cost, achieved GFLOP/s.

Prints, for the vanilla model with equal weighting (EW) and for CORE-MTL (dual stream, hard grounding,
CKA, CFA at probability ``loss.cfa_prob`` -- active from the first step here):

* ``step img/s``: forward + objective + method.backward + clip + AdamW on one pre-rendered batch
  (the trainer's ``train_step``), median over ``--steps`` steps after ``--warmup`` steps;
* ``loop img/s``: a whole ``Trainer.fit`` epoch of ``--steps`` steps, data rendering included;
* ``GFLOP/s``: FLOPs of one step counted by ``torch.utils.flop_counter`` divided by the median step
  time, next to a large fp32 matmul's GFLOP/s measured in the same run (the machine's ceiling).

Usage::

    python benchmarks/bench_train.py --profile cpu --steps 10
    python benchmarks/bench_train.py --profile cpu model.width=24      # any config override
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from coremtl_lite.config import get_config
from coremtl_lite.experiments import CORE_MTL, baseline
from coremtl_lite.train import Trainer
from coremtl_lite.train.evaluation import to_device

#: the demo's two recipes (coremtl_lite.experiments); CORE-MTL with CFA from the first step, so every step is timed
RECIPES = {
    "EW (vanilla)": baseline("ew").overrides,
    "CORE-MTL": CORE_MTL + ("loss.cfa_start=0", "loss.decomposition_warmup=0", "loss.cfa_max_rec_ratio=1e9"),
}


def matmul_gflops(n: int = 2048, repeats: int = 5) -> float:
    """GFLOP/s of an ``n x n`` fp32 matmul (2 n^3 FLOPs), best of ``repeats``."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = min(_timed(lambda: a @ b) for _ in range(repeats))
    return 2 * n ** 3 / best / 1e9


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def bench(name: str, profile: str, overrides: list[str], steps: int, warmup: int) -> dict:
    cfg = get_config(profile, [*RECIPES[name], *overrides, "train.progress=false", "train.checkpoint_every=0",
                               "train.eval_every=0", "train.grad_log_every=0",
                               f"train.max_steps_per_epoch={steps}",
                               "train.out_dir=runs/bench_train"])
    trainer = Trainer(cfg)
    batch = to_device(trainer.splits.train.get_batch(list(range(cfg.data.batch_size))), trainer.device,
                      trainer.channels_last)
    trainer.model.train()
    times = []
    for i in range(warmup + steps):
        dt = _timed(lambda: trainer.train_step(batch, epoch=0, loss_fn=None))
        if i >= warmup:
            times.append(dt)
    with FlopCounterMode(display=False) as counter:
        trainer.train_step(batch, epoch=0, loss_fn=None)
    flops = counter.get_total_flops()
    step = statistics.median(times)
    fresh = Trainer(cfg)
    loop = _timed(lambda: fresh.fit(stop_at_epoch=1))
    bs = cfg.data.batch_size
    return {"name": name, "step_s": step, "step_ips": bs / step, "loop_ips": fresh.step * bs / loop,
            "gflop_step": flops / 1e9, "gflops": flops / step / 1e9}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--profile", default="cpu")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("overrides", nargs="*")
    args = p.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, profile {args.profile} {args.overrides}")
    ceiling = matmul_gflops()
    rows = [bench(name, args.profile, args.overrides, args.steps, args.warmup) for name in RECIPES]
    print(f"{'recipe':14s} {'step s':>8s} {'step img/s':>11s} {'loop img/s':>11s} {'GFLOP/step':>11s} "
          f"{'GFLOP/s':>8s} {'% of matmul':>11s}")
    for r in rows:
        print(f"{r['name']:14s} {r['step_s']:8.3f} {r['step_ips']:11.1f} {r['loop_ips']:11.1f} {r['gflop_step']:11.2f} "
              f"{r['gflops']:8.1f} {100 * r['gflops'] / ceiling:10.1f}%")
    print(f"fp32 matmul 2048^3: {ceiling:.1f} GFLOP/s")
    print(f"CORE-MTL / EW step cost: {rows[1]['step_s'] / rows[0]['step_s']:.2f} (goal <= 2.0; the paper: 3.45)")


if __name__ == "__main__":
    main()
