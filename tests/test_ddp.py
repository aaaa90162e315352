"""Two CPU processes under torchrun (gloo) reproduce a one-process run with the same global batch."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from _train_helpers import ddp_trainer

HERE = Path(__file__).resolve().parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.timeout(180)
def test_two_processes_match_one(tmp_path):
    out = tmp_path / "ddp.pt"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(HERE.parent)}
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        "--master_addr=127.0.0.1",
        f"--master_port={_free_port()}",
        str(HERE / "_ddp_worker.py"),
        str(out),
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=170)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    ddp = torch.load(out, weights_only=True)
    assert ddp["world_size"] == 2

    single = ddp_trainer(tmp_path / "single")
    assert single.dist.world_size == 1
    single.fit()
    res = single.evaluate(domains=["source"], use_best=False)

    # same number of steps, and per-step global-batch losses agree
    assert len(ddp["steps"]) == len(single.history.steps) > 0
    for a, b in zip(single.history.steps, ddp["steps"]):
        assert a["step"] == b["step"] and a["lr"] == b["lr"]
        for key in ("loss/total", "loss/segmentation", "loss/depth", "loss/normal"):
            assert b[key] == pytest.approx(a[key], rel=1e-4), (a["step"], key)
    # parameters after training agree (BatchNorm statistics are global on both sides): the difference is
    # small next to how far training moved them. (Biases whose gradient is ~0 -- cancelled by a later
    # BatchNorm -- take Adam steps of +-lr from rounding noise, so an elementwise tolerance would not fit.)
    init = ddp_trainer(tmp_path / "init").model.state_dict()
    names = [n for n, _ in single.model.named_parameters()]
    final = single.model.state_dict()
    diff = torch.cat([(final[n] - ddp["model"][n]).flatten() for n in names]).norm()
    moved = torch.cat([(final[n] - init[n]).flatten() for n in names]).norm()
    assert moved > 0.05 and diff < 0.03 * moved, (float(diff), float(moved))
    for name in names:
        if "pool" not in name:  # every parameter outside the ASPP pooling branch agrees element-wise too
            assert torch.allclose(final[name], ddp["model"][name], rtol=1e-3, atol=2e-4), name
    # and so do the evaluation metrics (the meters were all-reduced over both ranks)
    for task, metrics in res["source"].items():
        for m, v in metrics.items():
            assert ddp["results"]["source"][task][m] == pytest.approx(v, rel=1e-3, abs=1e-4), (task, m)
