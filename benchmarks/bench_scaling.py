"""Paper Table 4 in miniature: training time per epoch against the number of tasks.

The paper (§4.3, Table 4) trains on CelebA with 10/20/30/40 binary attribute tasks and reports
that PCGrad's time per epoch grows with the number of tasks T (one backward pass per task, then a
T x T projection loop) while CORE-MTL's stays flat (a fixed decoder overhead, then plain EW). Here
ShadedAttributes stands in for CelebA and every attribute is one task.

Two modes, both reporting seconds per epoch and the ratio to EW at the same T (ratios are only
compared within one run, on one machine):

* ``--mode seam`` (always available): a small fixed conv encoder with one linear head per
  attribute, each attribute's BCE loss a separate task, trained through ``method.backward`` for
  EW, PCGrad and STCH. It isolates the cost each method adds as T grows. CORE-MTL needs the
  dual-stream model and its objective, so it is not in this mode.
* ``--mode trainer``: the package's one training loop (``coremtl_lite.train.Trainer``) with the
  same overrides as the ``scalability`` suite of ``coremtl_lite.bench.suites``, for EW, PCGrad,
  STCH and CORE-MTL; the wall time of ``fit()`` divided by the number of epochs. Note that the
  methods only see T tasks if the objective hands them one loss per attribute.

Usage::

    .venv/bin/python benchmarks/bench_scaling.py --mode seam --epochs 2 --steps 8
    .venv/bin/python benchmarks/bench_scaling.py --mode trainer --profile cpu
"""

from __future__ import annotations

import argparse
import json
import time

import torch
import torch.nn.functional as F
from torch import nn

from coremtl_lite.data import ShadedAttributes
from coremtl_lite.methods import build_method

TASK_COUNTS = (10, 20, 30, 40)


class SmallEncoder(nn.Module):
    """Three strided 3x3 convolutions and global pooling: a stand-in shared encoder."""

    def __init__(self, width: int = 32):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(3, width, 3, 2, 1),
            nn.ReLU(),
            nn.Conv2d(width, width, 3, 2, 1),
            nn.ReLU(),
            nn.Conv2d(width, width, 3, 2, 1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )

    def forward(self, x):
        return self.net(x)


def seam_epoch_time(
    method_name: str,
    num_tasks: int,
    epochs: int,
    steps: int,
    batch_size: int,
    image_size: int,
    width: int,
    seed: int,
) -> dict:
    """Seconds per epoch of ``steps`` optimisation steps of the encoder + ``num_tasks`` heads."""
    data = ShadedAttributes(n_attributes=num_tasks, size=image_size, length=steps * batch_size, seed=seed)
    batches = [data.get_batch(list(range(i * batch_size, (i + 1) * batch_size))) for i in range(steps)]
    torch.manual_seed(seed)
    encoder = SmallEncoder(width)
    heads = nn.Linear(width, num_tasks)  # one logit per attribute = one linear head per task
    names = [f"attr{i}" for i in range(num_tasks)]
    method = build_method(method_name, names)
    opt = torch.optim.AdamW([*encoder.parameters(), *heads.parameters(), *method.parameters()], lr=1e-3)
    times, accuracy = [], 0.0
    for _ in range(epochs):
        start = time.perf_counter()
        correct = 0.0
        for batch in batches:
            opt.zero_grad(set_to_none=True)
            z = encoder(batch["image"])
            logits = heads(z)
            target = batch["attributes"]
            per_task = F.binary_cross_entropy_with_logits(logits, target, reduction="none").mean(0)
            method.backward(dict(zip(names, per_task)), shared_params=list(encoder.parameters()), features=z)
            opt.step()
            correct += float(((logits.detach() > 0).float() == target).float().mean())
        times.append(time.perf_counter() - start)
        accuracy = correct / len(batches)
    return {
        "method": method_name,
        "tasks": num_tasks,
        "sec_per_epoch": min(times[1:] or times),
        "train_acc": accuracy,
    }


def trainer_epoch_time(variant: str, num_tasks: int, profile: str, extra: list[str]) -> dict:
    """Seconds per epoch of the package trainer on the ``scalability`` recipe of ``variant``."""
    from coremtl_lite.bench.suites import SCALABILITY
    from coremtl_lite.config import get_config
    from coremtl_lite.train import Trainer

    recipe = {r.name: r.overrides for r in SCALABILITY}[variant]
    overrides = [
        "data.dataset=shaded_attributes",
        "data.tasks=attributes",
        "model.grounding=none",
        f"data.num_attributes={num_tasks}",
        *recipe,
        "train.checkpoint_every=0",
        "train.eval_every=0",
        "train.progress=false",
        f"train.out_dir=runs/bench_scaling/{variant}-{num_tasks}",
        *extra,
    ]
    cfg = get_config(profile, overrides)
    trainer = Trainer(cfg)
    start = time.perf_counter()
    trainer.fit()
    return {
        "method": variant,
        "tasks": num_tasks,
        "sec_per_epoch": (time.perf_counter() - start) / cfg.optim.epochs,
    }


def print_table(rows: list[dict]) -> None:
    """Seconds per epoch and the ratio to EW at the same number of tasks."""
    ew = {r["tasks"]: r["sec_per_epoch"] for r in rows if r["method"] == "ew"}
    print(
        f"{'method':10s} {'T':>4s} {'s/epoch':>9s} {'x EW':>6s}"
        + ("  train acc" if "train_acc" in rows[0] else "")
    )
    for r in rows:
        ratio = r["sec_per_epoch"] / ew[r["tasks"]] if r["tasks"] in ew else float("nan")
        acc = f"  {r['train_acc']:.3f}" if "train_acc" in r else ""
        print(f"{r['method']:10s} {r['tasks']:4d} {r['sec_per_epoch']:9.3f} {ratio:6.2f}{acc}")
    for m in sorted({r["method"] for r in rows}):
        ts = sorted((r["tasks"], r["sec_per_epoch"]) for r in rows if r["method"] == m)
        print(f"{m}: time(T={ts[-1][0]}) / time(T={ts[0][0]}) = {ts[-1][1] / ts[0][1]:.2f}")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mode", choices=("seam", "trainer"), default="seam")
    p.add_argument("--tasks", type=int, nargs="+", default=list(TASK_COUNTS))
    p.add_argument(
        "--methods", nargs="+", default=None, help="default: ew pcgrad stch (+ core_mtl in trainer mode)"
    )
    p.add_argument("--epochs", type=int, default=2, help="seam mode: epochs (the first is a warm-up)")
    p.add_argument("--steps", type=int, default=8, help="seam mode: steps per epoch")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--width", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--profile", default="ci", help="trainer mode: config profile")
    p.add_argument("--override", action="append", default=[], help="trainer mode: extra section.key=value")
    p.add_argument("--json", default=None, help="also write the rows to this JSON file")
    args = p.parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    rows = []
    for n in args.tasks:
        if args.mode == "seam":
            for m in args.methods or ["ew", "pcgrad", "stch"]:
                rows.append(
                    seam_epoch_time(
                        m, n, args.epochs, args.steps, args.batch_size, args.image_size, args.width, args.seed
                    )
                )
        else:
            for m in args.methods or ["ew", "pcgrad", "stch", "core_mtl"]:
                rows.append(trainer_epoch_time(m, n, args.profile, args.override))
    print_table(rows)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
