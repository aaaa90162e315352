"""Training throughput without changing a number (issue 15): rendering ahead in a background thread,
the render-once cache's shared budget, the mixed-precision helpers, and the benchmark script."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch

from coremtl_lite.config import get_config
from coremtl_lite.data import ShadedScenes, flip_batch, make_loader
from coremtl_lite.data.cache import CacheBudget, CachedDataset, cache_estimate
from coremtl_lite.data.prefetch import ahead
from coremtl_lite.runtime import compile_unavailable
from coremtl_lite.train import Trainer
from coremtl_lite.train.precision import Precision, amp_dtype, scale_gradients

ROOT = Path(__file__).resolve().parents[1]


def _same(a, b) -> bool:
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return torch.equal(a, b)


# --------------------------------------------------------------------------------------- ahead()
def test_ahead_yields_the_same_items_in_order():
    assert list(ahead(range(50), depth=3)) == list(range(50))
    assert list(ahead(range(5), depth=0)) == list(range(5))
    assert list(ahead([], depth=2)) == []
    with pytest.raises(ValueError, match="prefetch depth"):
        list(ahead(range(3), depth=-1))


def test_ahead_raises_the_error_at_the_item_where_it_happened():
    def items():
        yield 0
        yield 1
        raise KeyError("scene 2")

    seen = []
    with pytest.raises(KeyError, match="scene 2"):
        for x in ahead(items(), depth=2):
            seen.append(x)
    assert seen == [0, 1]


def test_leaving_the_loop_early_stops_the_thread():
    produced = []

    def items():
        for i in range(1000):
            produced.append(i)
            yield i

    gen = ahead(items(), depth=2)
    assert [next(gen) for _ in range(3)] == [0, 1, 2]
    gen.close()
    assert not any(t.name == "coremtl-prefetch" and t.is_alive() for t in threading.enumerate())
    assert len(produced) <= 3 + 2 + 1  # at most depth + 1 items produced for nothing


@pytest.mark.parametrize("threads", [1, 2])
def test_batches_rendered_ahead_are_bit_identical_to_rendering_in_the_loop(threads):
    """Rendered in another thread (whose torch thread count may differ from the caller's), shuffled and
    flipped by the loader's generator: the very same tensors as the synchronous loader's."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        ds = ShadedScenes(size=24, length=40, seed=5)
        loader = make_loader(ds, 8, shuffle=True, seed=1, epoch=2, transform=flip_batch)
        inline = list(loader)
        rendered = list(ahead(iter(loader), depth=2))
    finally:
        torch.set_num_threads(before)
    assert len(inline) == len(rendered) == 5
    assert all(_same(a, b) for a, b in zip(inline, rendered))


def _config(tmp_path, *overrides):
    return get_config(
        "ci",
        [
            "data.image_size=16",
            "data.train_size=48",
            "data.val_size=16",
            "data.test_size=16",
            "data.batch_size=8",
            "optim.epochs=2",
            "train.progress=false",
            "train.checkpoint_every=0",
            "train.grad_log_every=2",
            f"train.out_dir={tmp_path}",
            *overrides,
        ],
    )


@pytest.mark.parametrize("cache_bytes", [0, 1 << 30])
def test_training_with_rendering_ahead_gives_the_same_numbers(tmp_path, cache_bytes):
    """The same seed gives the same run, rendering ahead or in the loop, with and without the scene cache."""
    cfg = _config(
        tmp_path,
        "data.augment=true",
        "model.architecture=dual_stream",
        "model.grounding=hard",
        "loss.cfa_start=0",
        "loss.decomposition_warmup=0",
    )
    runs = [Trainer(cfg, cache_bytes=cache_bytes, prefetch=p) for p in (0, 2)]
    for tr in runs:
        tr.fit()
    (a, b) = runs
    assert len(a.history.steps) == len(b.history.steps) == 12
    for ra, rb in zip(a.history.steps, b.history.steps):
        assert ra == rb
    assert all(
        torch.equal(p, q) for p, q in zip(a.model.state_dict().values(), b.model.state_dict().values())
    )
    assert a.history.epochs[-1]["val"] == b.history.epochs[-1]["val"]


# ----------------------------------------------------------------------------------- CacheBudget
def test_one_cache_budget_for_all_datasets_training_split_first():
    train, val, test = (
        ShadedScenes(size=16, length=n, seed=0, offset=o) for n, o in ((20, 0), (10, 20), (10, 30))
    )
    need = cache_estimate(train)
    budget = CacheBudget(need + cache_estimate(val))
    wrapped = [budget.wrap(ds) for ds in (train, val, test)]
    assert isinstance(wrapped[0], CachedDataset) and isinstance(wrapped[1], CachedDataset)
    assert wrapped[2] is test  # over what is left: rendered each time, never a partial cache
    assert budget.left == 0
    assert CacheBudget(0).wrap(train) is train
    assert budget.wrap(wrapped[0]) is wrapped[0]  # never wrapped twice


def test_the_cache_renders_each_chunk_once_when_read_from_several_threads():
    from concurrent.futures import ThreadPoolExecutor

    ds = ShadedScenes(size=16, length=24, seed=2)
    calls = []
    inner = ds.get_batch
    ds.get_batch = lambda idx: calls.append(list(idx)) or inner(idx)
    cached, alone = CachedDataset(ds), CachedDataset(ShadedScenes(size=16, length=24, seed=2))
    cached.chunk = alone.chunk = 8
    asks = [[i % 24, (i * 7) % 24, (i * 5 + 3) % 24] for i in range(24)]
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(cached.get_batch, asks))
    assert sorted(map(tuple, calls)) == [tuple(range(0, 8)), tuple(range(8, 16)), tuple(range(16, 24))]
    assert all(_same(g, alone.get_batch(a)) for g, a in zip(got, asks))


def test_the_cache_renders_chunks_side_by_side_with_the_values_of_one_thread():
    import threading
    import time

    ds = ShadedScenes(size=16, length=40, seed=4)
    inner, lock, now, most = ds.get_batch, threading.Lock(), [0], [0]

    def counting(idx):
        with lock:
            now[0] += 1
            most[0] = max(most[0], now[0])
        time.sleep(0.05)  # long enough for the other thread to start its chunk
        try:
            return inner(idx)
        finally:
            with lock:
                now[0] -= 1

    ds.get_batch = counting
    two, one = CachedDataset(ds), CachedDataset(ShadedScenes(size=16, length=40, seed=4))
    two.chunk = one.chunk = 8
    one.render_threads = 1
    assert two.render_threads == 2
    asks = list(range(39, -1, -3))
    assert _same(two.get_batch(asks), one.get_batch(asks))  # the five chunks, bit for bit
    assert most[0] == 2  # two chunks were rendered at once, never more


def test_trainer_caches_within_its_budget(tmp_path):
    cfg = _config(tmp_path)
    small = Trainer(cfg, cache_bytes=cache_estimate(ShadedScenes(size=16, length=48)))
    assert isinstance(small.splits.train, CachedDataset)
    assert not isinstance(small.splits.val, CachedDataset)
    assert all(not isinstance(ds, CachedDataset) for ds in small.splits.test.values())
    assert all(not isinstance(ds, CachedDataset) for ds in Trainer(cfg, cache_bytes=0).splits.test.values())


# ------------------------------------------------------------------------------------- precision
def test_precision_is_float32_off_cuda():
    cpu = torch.device("cpu")
    assert amp_dtype(cpu, enabled=True) is None
    p = Precision(cpu, enabled=True)
    assert p.dtype is None and p.scaler is None
    x = torch.ones(3, requires_grad=True)
    with p.autocast():
        y = (x * 2).sum()
    assert y.dtype == torch.float32
    losses, extra = p.scale_losses({"a": y}, None)
    assert losses["a"] is y and extra is None


def test_scale_gradients_scales_the_gradient_not_the_value():
    x = torch.tensor([1.0, 2.0], requires_grad=True)
    y = scale_gradients((x**2).sum(), 8.0)
    assert y.item() == 5.0
    y.backward()
    assert torch.equal(x.grad, torch.tensor([16.0, 32.0]))
    assert scale_gradients(None, 8.0) is None


# ------------------------------------------------------------------------------------- allocator
_FAULTS = """
import resource, sys, torch
from coremtl_lite.runtime import keep_freed_memory
tuned = keep_freed_memory() if sys.argv[1] == "tuned" else False
x = torch.ones(32, 7, 64, 64)  # a training step's size of activation (3.7 MB)


def step():  # as a step: activations kept for the backward pass, then all freed together
    kept = [x * k for k in range(8)]
    return sum(float(y[0, 0, 0, 0]) for y in kept)


for _ in range(10):  # the heap grows to the steps' peak
    step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(40):
    step()
print(tuned, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(mode: str, **env: str) -> tuple[str, int]:
    done = subprocess.run(
        [sys.executable, "-c", _FAULTS, mode],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "OMP_NUM_THREADS": "1", **env},
        cwd=ROOT,
    )
    tuned, faults = done.stdout.split()
    return tuned, int(faults)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt: Linux only")
def test_keep_freed_memory_removes_the_page_faults_of_memory_freed_and_allocated_again():
    default, tuned = _faults("default"), _faults("tuned")
    assert default[0] == "False" and tuned[0] == "True"
    # glibc's defaults give the freed 30 MB back and map them afresh: 285,440 faults in most runs (900
    # per block), 9,700-11,600 in some (its own threshold adjustment); kept, none
    assert default[1] > 5000, default
    assert tuned[1] < 1000, tuned
    assert _faults("tuned", COREMTL_MALLOC_TUNING="0")[0] == "False"  # the documented opt-out


_TRAIN = """
import json, sys
from coremtl_lite.config import get_config
from coremtl_lite.experiments import CORE_MTL
from coremtl_lite.train import Trainer
over = [*CORE_MTL, "loss.cfa_start=0", "loss.decomposition_warmup=0", "loss.cfa_max_rec_ratio=1e9"]
cfg = get_config("ci", [*over, f"train.out_dir={sys.argv[1]}", "optim.epochs=2", "train.progress=false"])
trainer = Trainer(cfg)
trainer.fit()
print(json.dumps([[r["loss/total"], r["grad_norm"]] for r in trainer.history.steps]))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt: Linux only")
def test_keeping_freed_memory_changes_no_number(tmp_path):
    runs = []
    for tuning in ("1", "0"):
        done = subprocess.run(
            [sys.executable, "-c", _TRAIN, str(tmp_path / tuning)],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "COREMTL_MALLOC_TUNING": tuning},
            cwd=ROOT,
        )
        runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
    assert len(runs[0]) > 4 and runs[0] == runs[1]  # CORE-MTL with CFA: every loss and norm, bit for bit


def test_the_trainer_keeps_freed_memory(tmp_path):
    from coremtl_lite import runtime

    Trainer(get_config("ci", [f"train.out_dir={tmp_path}", "data.train_size=16", "data.val_size=8"]))
    assert runtime._ALLOCATOR_TUNED is (sys.platform.startswith("linux") and runtime.keep_freed_memory())


# --------------------------------------------------------------------------------- torch.compile
def test_compile_needs_a_cpp_compiler_on_the_cpu_only(monkeypatch):
    from coremtl_lite import runtime

    monkeypatch.delenv("CXX", raising=False)
    monkeypatch.setattr(runtime.shutil, "which", lambda name: "/usr/bin/g++" if name == "g++" else None)
    assert runtime.compile_unavailable(torch.device("cpu")) is None
    monkeypatch.setattr(runtime.shutil, "which", lambda name: None)  # a fresh machine: Python and pip only
    assert "C++ compiler" in runtime.compile_unavailable(torch.device("cpu"))
    assert runtime.compile_unavailable(torch.device("cuda")) is None  # Triton, not the system's compiler
    monkeypatch.setenv("CXX", "my-c++")
    monkeypatch.setattr(runtime.shutil, "which", lambda name: "/opt/my-c++" if name == "my-c++" else None)
    assert runtime.compile_unavailable(torch.device("cpu")) is None


def test_compile_without_a_cpp_compiler_trains_eagerly_with_a_warning(tmp_path, monkeypatch):
    from coremtl_lite import runtime

    monkeypatch.delenv("CXX", raising=False)
    monkeypatch.setattr(runtime.shutil, "which", lambda name: None)
    cfg = get_config(
        "ci", ["train.compile=true", f"train.out_dir={tmp_path}", "data.train_size=16", "data.val_size=8"]
    )
    with pytest.warns(RuntimeWarning, match="train.compile=true ignored.*C\\+\\+ compiler"):
        trainer = Trainer(cfg)
    assert trainer.model._compiled_call_impl is None  # eager
    batch = next(iter(trainer.train_loader))
    assert math.isfinite(trainer.train_step(batch, epoch=0)["loss/total"])


@pytest.mark.skipif(
    compile_unavailable(torch.device("cpu")) is not None,
    reason="torch.compile on the CPU needs a C++ compiler",
)
def test_the_upsampling_compiles_to_the_same_values_without_warnings():
    import warnings

    from coremtl_lite.models.blocks import upsample_to

    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    compiled = torch.compile(lambda t: upsample_to(t, (32, 24)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Dynamo warned of the matrices' lru_cache
        y = compiled(x)
    assert torch.equal(y, upsample_to(x, (32, 24)))


# ------------------------------------------------------------------------------ the benchmark script
def _run_benchmark(script: str, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    """``benchmarks/<script>`` with ``args`` in a fresh interpreter, from the repository root."""
    return subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
    )


def test_bench_train_script_runs_in_the_ci_profile():
    done = _run_benchmark(
        "bench_train.py",
        *("--profile", "ci", "--steps", "2", "--warmup", "0", "--uncached", "--rounds", "2"),
        *("data.image_size=16", "data.train_size=16", "data.val_size=8", "data.test_size=8"),
        "data.batch_size=8",
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout
    for line in (
        "loop / step",
        "(goal >= 90%",
        "step GFLOP/s / matmul",
        "(goal >= 50%",
        "(goal >= 45%",
        "CORE-MTL / EW step cost",
        "(goal <= 1.4",
        "peak RSS",
        "val img/s",
        "without the scene cache",
        "fp32 matmul before and after each round",
        "faults/step",
        "freed memory kept",
        "round 2 of 2:",
        "over 2 rounds, median (range):",
    ):
        assert line in out, line
    # the summary names both recipes, a range for each figure, and the paired cost ratio
    summary = out[out.index("over 2 rounds") :]
    assert summary.count("(range ") == 7, summary
    assert "EW        step img/s" in summary and "CORE-MTL  step img/s" in summary


def test_bench_train_script_refuses_zero_rounds():
    done = _run_benchmark("bench_train.py", "--rounds", "0", timeout=120)
    assert done.returncode == 2 and "--rounds must be >= 1, got 0" in done.stderr


@pytest.mark.kernels
def test_bench_tutorials_script_times_a_notebook_in_a_copy_and_names_the_goal():
    stored = ROOT / "tutorials" / "01_scm_theory.ipynb"
    before = stored.read_bytes()
    runs = ROOT / "tutorials" / "runs"
    had_runs = runs.exists()
    done = _run_benchmark("bench_tutorials.py", "--profile", "ci", str(stored))
    assert done.returncode == 0, done.stderr
    out = done.stdout
    line = next(x for x in out.splitlines() if x.startswith("01_scm_theory.ipynb"))
    assert "(goal <= 180 s: met)" in line and float(line.split()[1]) > 0
    assert "the ci profile is a smoke test" in out and "every notebook within the goal" in out
    assert stored.read_bytes() == before  # executed in a temporary copy: the stored notebook is untouched
    assert runs.exists() == had_runs


def test_bench_tutorials_script_refuses_a_path_that_is_not_a_tutorial(tmp_path):
    other = tmp_path / "x.ipynb"
    other.write_text("{}")
    for arg in (str(other), str(ROOT / "README.md")):
        done = _run_benchmark("bench_tutorials.py", arg, timeout=120)
        assert done.returncode == 1 and "bench_tutorials:" in done.stderr, done.stderr


def test_as_floats_reads_every_tensor_back_exactly_and_keeps_the_rest():
    from coremtl_lite.runtime import as_floats

    x = torch.tensor(0.1, dtype=torch.float32)
    values = {"a": x, "b": torch.tensor([1.0 / 3], dtype=torch.bfloat16), "n": 3, "s": "kept", "f": 0.25}
    out = as_floats(values)
    assert out == {"a": float(x), "b": float(values["b"]), "n": 3, "s": "kept", "f": 0.25}
    assert type(out["a"]) is float and type(out["b"]) is float
    assert as_floats({}) == {} and values["a"] is x  # the input is not changed
    with pytest.raises(RuntimeError):
        as_floats({"vector": torch.zeros(2)})  # one number per entry
