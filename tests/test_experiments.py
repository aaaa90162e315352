"""The experiments layer: recipes, the run identity, aggregation over seeds, the table formatter, one run."""

import math

import pytest

from coremtl_lite.config import apply_overrides, get_config
from coremtl_lite.experiments import (
    ABLATION,
    CORE,
    RECIPES,
    STL,
    baseline,
    expand,
    format_mean_std,
    format_table,
    mean_rows,
    mean_std,
    recipe,
    recipe_config,
    run_key,
    train_and_evaluate,
)

TINY = [
    "data.image_size=16",
    "data.train_size=8",
    "data.val_size=8",
    "data.test_size=8",
    "data.batch_size=8",
    "optim.epochs=1",
    "data.eval_domains=source",
    "train.checkpoint_every=0",
]


def test_recipes_resolve_to_the_models_they_name():
    core = recipe_config(CORE, "ci")
    assert (
        core.model.architecture == "dual_stream"
        and core.model.grounding == "hard"
        and core.train.method == "ew"
    )
    pcgrad = recipe_config(baseline("pcgrad"), "ci")
    assert pcgrad.model.architecture == "vanilla" and pcgrad.model.grounding == "none"
    assert pcgrad.train.method == "pcgrad"
    assert recipe_config("core_mtl_soft", "ci").model.grounding == "soft"
    assert [r.name for r in ABLATION] == ["vanilla", "ds", "ds+grounding", "ds+grounding+cka", "full"]
    assert set(RECIPES) >= {"core_mtl", "core_mtl_soft", "ew", "pcgrad", "stl"}
    with pytest.raises(ValueError, match="unknown recipe 'nope'"):
        recipe("nope")


def test_stl_expands_to_one_single_task_run_per_task():
    cfg = recipe_config(STL, "ci")
    runs = expand(STL, cfg)
    assert [t for t, _ in runs] == list(cfg.data.tasks)
    assert all(c.data.tasks == (t,) and c.train.method == "stl" for t, c in runs)
    assert expand(CORE, cfg) == [(None, cfg)]


def test_run_key_names_what_a_run_computes():
    cfg = recipe_config(CORE, "ci")
    same = apply_overrides(
        cfg,
        ["train.out_dir=elsewhere", "train.progress=true", "train.checkpoint_every=3", "train.log_every=7"],
    )
    assert run_key(cfg) == run_key(same) and len(run_key(cfg)) == 16
    assert run_key(cfg) != run_key(apply_overrides(cfg, ["train.seed=1"]))
    assert run_key(cfg) != run_key(recipe_config("ew", "ci"))


def test_format_mean_std_never_shows_a_spread_of_one_seed():
    assert format_mean_std(0.54321, 0.0123, 3) == "0.5432 ± 0.012"
    assert format_mean_std(0.54321, 0.0, 1) == "0.5432 (1 seed)"
    assert format_mean_std(2.5, 0.7071, 2, digits=3) == "2.5 ± 0.71"


def test_mean_std_is_the_sample_estimate():
    assert mean_std([1.0, 3.0]) == (2.0, pytest.approx(math.sqrt(2.0)))
    assert mean_std([5.0]) == (5.0, 0.0)
    with pytest.raises(ValueError, match="at least one"):
        mean_std([])
    assert mean_rows([{"a": 1.0, "b": 2.0}, {"a": 3.0}], with_std=True) == {
        "a": 2.0,
        "a_std": pytest.approx(2**0.5),
    }


def test_format_table_markdown_and_plain():
    md = format_table(["variant", "mIoU"], [["ew", "0.5"], ["core_mtl", "0.75"]], style="markdown")
    assert md.splitlines() == ["| variant | mIoU |", "|---|---|", "| ew | 0.5 |", "| core_mtl | 0.75 |"]
    plain = format_table(["run", "x", "y"], [["a", "1.0", "-"], ["bbbb", "22.5", "3"]], left=1).splitlines()
    assert len({len(line) for line in plain}) == 1 and set(plain[1]) == {"-"}
    assert plain[2].startswith("a ") and plain[2].endswith("-") and plain[3].split() == ["bbbb", "22.5", "3"]
    with pytest.raises(ValueError, match="row 0 has 1 cells, the header 2"):
        format_table(["a", "b"], [["x"]])
    with pytest.raises(ValueError, match="style"):
        format_table(["a"], [], style="html")


def test_train_and_evaluate_gives_metrics_and_the_trivial_rows(tmp_path):
    cfg = recipe_config("ew", "ci", [*TINY, f"train.out_dir={tmp_path}"])
    run = train_and_evaluate(cfg)
    assert set(run.results) == set(run.trivial) == {"source"}
    assert set(run.results["source"]) == set(cfg.data.tasks) and run.best_epoch == 1
    record = run.record()
    assert record["results"] == run.results and record["epoch_seconds"] > 0
    assert (
        train_and_evaluate(apply_overrides(cfg, [f"train.out_dir={tmp_path / 'b'}"]), domains=()).results
        == {}
    )


def test_the_retired_architecture_key_names_its_replacement():
    from coremtl_lite.config import ConfigError

    with pytest.raises(ConfigError, match="model.dual_stream was replaced by model.architecture=dual_stream"):
        get_config("ci", ["model.dual_stream=true"])
