"""map_forked: the seeds of one comparison side by side, with the numbers of a plain loop."""

import os

import pytest
import torch

from coremtl_lite.diagnostics.spurious_study import (
    over_seeds,
    over_seeds_table,
    run_spurious,
    stl_vs_mtl,
    study_config,
)
from coremtl_lite.experiments.processes import map_forked


def test_map_forked_keeps_the_order_and_runs_the_first_item_here():
    here = []

    def square(x):
        here.append((x, os.getpid()))  # a child appends to its own copy only
        return x * x

    assert map_forked(square, [3, 1, 4, 1, 5], processes=3) == [9, 1, 16, 1, 25]
    assert here == [(3, os.getpid())]
    assert map_forked(square, [2, 7], processes=1) == [4, 49]
    assert map_forked(square, [], processes=2) == []


def _matmul_trace(n):
    a = torch.ones(256, 256)
    return float((a @ a).trace()) + n


@pytest.mark.timeout(120)
def test_map_forked_children_do_not_hang_on_the_parents_thread_pool():
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        _matmul_trace(0)  # the parent's OpenMP pool now has its threads; a forked child has none of them
        assert map_forked(_matmul_trace, [0, 1, 2], processes=3) == [256.0**2 + n for n in range(3)]
    finally:
        torch.set_num_threads(threads)


def _fill_a_cache(n):
    from coremtl_lite.data import ShadedScenes
    from coremtl_lite.data.cache import CachedDataset

    cache = CachedDataset(ShadedScenes(size=16, length=4 * CachedDataset.chunk, seed=n))
    cache.render_threads = 2  # the shared render pool
    return float(cache.get_batch(list(range(len(cache))))["image"].sum())


@pytest.mark.timeout(120)
def test_map_forked_children_start_their_own_render_pool():
    """The parent's render pool has idle threads that a forked child does not have: without a pool of
    its own, a child's cache fill would wait for them forever (tutorial 07 hung so)."""
    expected = [_fill_a_cache(n) for n in range(3)]  # the parent's pool now exists, its threads idle
    assert map_forked(_fill_a_cache, [0, 1, 2], processes=3) == expected


def _fail_on_two(x):
    if x == 2:
        raise KeyError("no two here")
    return x


def _die_on_two(x):
    if x == 2:
        os._exit(3)
    return x


def test_map_forked_reports_a_failing_or_dying_child_and_bad_arguments():
    with pytest.raises(
        RuntimeError, match=r"item 1 \(2\) failed in its child process:(.|\n)*KeyError: 'no two here'"
    ):
        map_forked(_fail_on_two, [1, 2, 3], processes=2)
    with pytest.raises(RuntimeError, match=r"item 1 \(2\) died \(exit code 3\)"):
        map_forked(_die_on_two, [1, 2], processes=2)
    with pytest.raises(KeyError):  # the first item runs here: its own exception, unchanged
        map_forked(_fail_on_two, [2, 1], processes=2)
    with pytest.raises(ValueError, match="processes must be >= 1"):
        map_forked(abs, [1], processes=0)


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the children's setting: the same float rounding here and there
    yield
    torch.set_num_threads(threads)


def test_over_seeds_in_processes_gives_the_numbers_of_one_process(one_thread):
    cfg = study_config("multisem", profile="ci", overrides=["optim.epochs=2"])
    kept = {}

    def keep_first(c):
        run = run_spurious(c)
        kept.setdefault(c.train.seed, run)
        return run

    parallel = over_seeds(keep_first, cfg, [0, 1, 2], processes=3)
    assert list(kept) == [0] and kept[0].trainer is not None  # seed 0 trained here, its trainer kept
    assert parallel == over_seeds(run_spurious, cfg, [0, 1, 2], processes=1)
    table = over_seeds(stl_vs_mtl, cfg, [0, 1], processes=2)
    assert table == over_seeds(stl_vs_mtl, cfg, [0, 1])
    assert set(table) == {"MTL", "STL"} and table["MTL"]["acc_source_std"] > 0


def test_over_seeds_table_runs_each_seeds_table_in_one_process_with_the_numbers_of_one(one_thread):
    base = study_config("multisem", profile="ci", overrides=["optim.epochs=2"])
    jobs = {
        "ew": (run_spurious, base),
        "longer": (run_spurious, study_config("multisem", profile="ci", overrides=["optim.epochs=3"])),
        "stl vs mtl": (stl_vs_mtl, base),
    }
    kept = []

    def keep(c):  # runs in the caller for the first seed only
        kept.append(c.train.seed)
        return run_spurious(c)

    table = over_seeds_table({**jobs, "kept": (keep, base)}, [0, 1, 2], processes=3)
    assert kept == [0]
    assert list(table) == ["ew", "longer", "stl vs mtl", "kept"]
    assert table["kept"] == table["ew"] == over_seeds(run_spurious, base, [0, 1, 2])
    assert table["longer"] != table["ew"]  # each label its own config
    assert table["stl vs mtl"] == over_seeds(stl_vs_mtl, base, [0, 1, 2])
    assert over_seeds_table(jobs, [0, 1, 2], processes=1) == {k: v for k, v in table.items() if k != "kept"}
