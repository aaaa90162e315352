"""The reproduction suite: planning, sharing and resuming runs, aggregation, and a real end-to-end run."""

import json
import math

import pytest

from coremtl_lite.bench import build_suites, run_bench
from coremtl_lite.bench.runner import is_trivial, merge_per_task, plan_runs, summarise, trivial_variant
from coremtl_lite.metrics import delta_m

DIRECTIONS = {"segmentation": {"mIoU": True}, "depth": {"abs_err": False}}


def test_every_suite_plans_valid_configs():
    suites = build_suites(("ew", "pcgrad"))
    assert set(suites) == {
        "id",
        "sim2real",
        "corruptions",
        "colored",
        "scalability",
        "ablation",
        "grounding",
        "lambda-ind",
        "lambda-cfa",
        "ood-severity",
        "ood-rho",
    }
    for suite in suites.values():
        runs = plan_runs(suite, "ci", seeds=(0, 1))
        assert runs and all(r.cfg.train.seed in (0, 1) for r in runs)


def test_suites_share_identical_runs():
    suites = build_suites(("ew",))
    keys = {name: {r.key for r in plan_runs(s, "ci", (0,))} for name, s in suites.items()}
    assert keys["id"] == keys["sim2real"] == keys["corruptions"]
    # the ablation's "full" is CORE-MTL and its "vanilla" is the EW baseline of Table 1
    assert len(keys["ablation"] & keys["id"]) == 2
    # lambda_ind = 1 and lambda_cfa = 1 are the default CORE-MTL run
    assert keys["lambda-ind"] & keys["lambda-cfa"] & keys["id"]


def test_stl_runs_one_model_per_task():
    runs = plan_runs(build_suites(("ew",))["id"], "ci", (0,))
    stl = [r for r in runs if r.variant.per_task]
    assert sorted(r.cfg.data.tasks for r in stl) == [("depth",), ("normal",), ("segmentation",)]
    assert {r.cfg.train.method for r in stl} == {"stl"} and len({r.key for r in stl}) == 3


def test_delta_m_signs_follow_directions():
    ref = {"segmentation": {"mIoU": 0.5}, "depth": {"abs_err": 1.0}}
    better = {"segmentation": {"mIoU": 0.55}, "depth": {"abs_err": 0.9}}
    assert delta_m(better, ref, DIRECTIONS) == pytest.approx(10.0)
    assert delta_m(ref, ref, DIRECTIONS) == 0.0
    worse = {"segmentation": {"mIoU": 0.45}, "depth": {"abs_err": 1.1}}
    assert delta_m(worse, ref, DIRECTIONS) == pytest.approx(-10.0)
    # the benchmark's lenient form: a metric missing on one side is skipped, none left is NaN
    assert delta_m({"segmentation": {"mIoU": 0.55}}, ref, DIRECTIONS, lenient=True) == pytest.approx(10.0)
    assert math.isnan(delta_m({"other": {"acc": 1.0}}, ref, DIRECTIONS, lenient=True))


def test_summary_gives_mean_std_and_delta_m_against_stl():
    suite = build_suites(("ew",))["id"]
    recs = []
    for seed, (miou, err) in enumerate([(0.4, 1.0), (0.6, 0.8)]):
        recs.append(
            {
                "suite": "id",
                "variant": "ew",
                "seed": seed,
                "task": None,
                "epoch_seconds": 1.0,
                "results": {"source": {"segmentation": {"mIoU": miou}, "depth": {"abs_err": err}}},
            }
        )
        for task, res in (("segmentation", {"mIoU": 0.5}), ("depth", {"abs_err": 1.0})):
            recs.append(
                {
                    "suite": "id",
                    "variant": "stl",
                    "seed": seed,
                    "task": task,
                    "epoch_seconds": 1.0,
                    "results": {"source": {task: res}},
                }
            )
    assert len(merge_per_task(recs)) == 4
    rows = {(r["variant"], r["task"], r["metric"]): r for r in summarise(suite, recs, DIRECTIONS)}
    miou = rows[("ew", "segmentation", "mIoU")]
    assert (
        miou["mean"] == pytest.approx(0.5)
        and miou["std"] == pytest.approx(math.sqrt(0.02))
        and miou["n"] == 2
    )
    dm = rows[("ew", "all", "delta_m%")]
    # seed 0: (-20 + 0)/2 = -10; seed 1: (+20 + 20)/2 = +20
    assert dm["mean"] == pytest.approx(5.0)
    assert rows[("stl", "all", "delta_m%")]["mean"] == pytest.approx(0.0)


def test_unknown_suite_is_an_error(tmp_path):
    with pytest.raises(KeyError, match="unknown suite"):
        run_bench(["table99"], profile="ci", out_dir=tmp_path)


@pytest.mark.slow
def test_every_suite_runs_end_to_end_in_the_ci_profile_and_resumes(tmp_path):
    from coremtl_lite.bench.runner import train_and_record

    calls = []

    def counting(cfg, domains, probes=()):
        calls.append((cfg.train.seed, cfg.data.tasks))
        return train_and_record(cfg, domains, probes)

    over = [
        "optim.epochs=1",
        "data.train_size=16",
        "data.val_size=8",
        "data.test_size=8",
        "loss.perceptual=ssim",
    ]
    names = list(build_suites(("ew",)))
    rows = run_bench(
        names,
        profile="ci",
        seeds=(0,),
        out_dir=tmp_path,
        baselines=("ew",),
        overrides=over,
        run_fn=counting,
        progress=False,
    )
    assert {r["suite"] for r in rows} == set(names)
    variants = {(r["suite"], r["variant"]) for r in rows}
    assert {
        ("id", "stl"),
        ("id", "ew"),
        ("id", "core_mtl"),
        ("ablation", "vanilla"),
        ("ablation", "full"),
        ("scalability", "pcgrad@40"),
        ("lambda-cfa", "lambda_cfa=5"),
        ("ood-severity", "stch"),
        ("ood-rho", "core_mtl@rho=0.9"),
    } <= variants
    assert any(r["metric"] == "delta_m%" for r in rows)
    assert {r["metric"] for r in rows if r["suite"] == "scalability" and r["task"] == "all"} >= {
        "avg_acc",
        "seconds/epoch",
    }
    # one model per attribute-task count: the 40-task runs have 40 heads
    assert max(len(t) for _, t in calls) == 40
    for name in ("results.json", "results.csv", "report.html", "metadata.json", "ood_study.json"):
        assert (tmp_path / name).stat().st_size > 0
    meta = json.loads((tmp_path / "metadata.json").read_text())
    assert meta["profile"] == "ci" and "torch" in meta and "git_commit" in meta
    # every run record names the commit that trained it, and the metadata counts the runs per commit
    stored = [json.loads(f.read_text()) for f in (tmp_path / "runs").glob("*.json")]
    assert stored and {r["git_commit"] for r in stored} == {meta["git_commit"]}
    assert set(meta["run_commits"]) == {meta["git_commit"]} and sum(meta["run_commits"].values()) >= len(
        stored
    )
    # shared runs are trained once, and a second call trains nothing: every run is read back
    n_first = len(calls)
    run_bench(
        ["id", "ablation"],
        profile="ci",
        seeds=(0,),
        out_dir=tmp_path,
        baselines=("ew",),
        overrides=over,
        run_fn=counting,
        progress=False,
    )
    assert len(calls) == n_first


def test_summary_starts_with_the_trivial_predictors_rows():
    suite = build_suites(("ew",))["id"]
    recs = []
    for seed in (0, 1):
        trivial = {"source": {"segmentation": {"mIoU": 0.1 + 0.1 * seed}, "depth": {"abs_err": 2.0}}}
        recs.append(
            {
                "suite": "id",
                "variant": "ew",
                "seed": seed,
                "task": None,
                "epoch_seconds": 1.0,
                "results": {"source": {"segmentation": {"mIoU": 0.5}, "depth": {"abs_err": 1.0}}},
                "trivial": trivial,
            }
        )
        recs.append(
            {
                "suite": "id",
                "variant": "stl",
                "seed": seed,
                "task": "depth",
                "epoch_seconds": 1.0,
                "results": {"source": {"depth": {"abs_err": 1.0}}},
                "trivial": {"source": {"depth": {"abs_err": 2.0}}},
            }
        )
    rows = summarise(suite, recs, DIRECTIONS)
    assert rows[0]["variant"] == "trivial"
    by = {(r["variant"], r["task"], r["metric"]): r for r in rows}
    assert by[("trivial", "segmentation", "mIoU")]["mean"] == pytest.approx(0.15)
    assert by[("trivial", "segmentation", "mIoU")]["n"] == 2  # one per seed, not one per run
    assert by[("trivial", "depth", "abs_err")]["mean"] == pytest.approx(2.0)
    assert ("trivial", "all", "seconds/epoch") not in by


def test_each_group_of_variants_has_its_own_trivial_row():
    """The scalability suite's ``ew@10`` trains 10 attribute tasks and ``ew@40`` 40: each task count
    stands beside the constants of its own tasks, not of all 40."""
    suite = build_suites(("ew",))["scalability"]
    recs = []
    for n, majority in ((10, 0.7), (40, 0.8)):
        tasks = [f"attr{i}" for i in range(n)]
        for variant in (f"ew@{n}", f"pcgrad@{n}"):
            recs.append(
                {
                    "suite": "scalability",
                    "variant": variant,
                    "seed": 0,
                    "task": None,
                    "epoch_seconds": 1.0,
                    "results": {"source": {t: {"acc": majority + 0.1} for t in tasks}},
                    "trivial": {"source": {t: {"acc": majority} for t in tasks}},
                }
            )
    rows = [r for r in summarise(suite, recs, {}) if r["metric"] in ("avg_acc", "seconds/epoch")]
    assert [(r["variant"], r["metric"]) for r in rows[:3]] == [
        ("trivial@10", "avg_acc"),
        ("ew@10", "avg_acc"),
        ("ew@10", "seconds/epoch"),
    ]
    by = {(r["variant"], r["metric"]): r["mean"] for r in rows}
    assert by[("trivial@10", "avg_acc")] == pytest.approx(0.7)
    assert by[("trivial@40", "avg_acc")] == pytest.approx(0.8)
    assert ("trivial@40", "seconds/epoch") not in by
    assert is_trivial("trivial@40") and not is_trivial("ew@40") and trivial_variant("ew") == "trivial"


def test_a_suite_can_have_its_own_seeds_and_the_metadata_says_so(tmp_path):
    seeds = []

    def run_fn(cfg, domains, probes=()):  # no training: what the report needs, per domain
        seeds.append(cfg.train.seed)
        res = {
            d: {"segmentation": {"mIoU": 0.5}, "depth": {"abs_err": 0.2}, "normal": {"mean": 20.0}}
            for d in domains
        }
        return {"results": res, "trivial": res, "epoch_seconds": 1.0}

    kw = dict(profile="ci", seeds=(0,), out_dir=tmp_path, progress=False, run_fn=run_fn)
    rows = run_bench(["grounding", "lambda-cfa"], suite_seeds={"grounding": (0, 1, 2)}, **kw)
    n = {r["suite"]: r["n"] for r in rows if r["metric"] == "mIoU" and r["variant"] != "trivial"}
    assert n == {"grounding": 3, "lambda-cfa": 1}
    assert sorted(set(seeds)) == [0, 1, 2]
    meta = json.loads((tmp_path / "metadata.json").read_text())
    assert meta["seeds"] == [0] and meta["suite_seeds"] == {"grounding": [0, 1, 2]}
    with pytest.raises(KeyError, match="'id'.*not run"):
        run_bench(["grounding"], suite_seeds={"id": (0,)}, **kw)
    with pytest.raises(ValueError, match="at least one seed"):
        run_bench(["grounding"], suite_seeds={"grounding": ()}, **kw)


def test_the_bench_command_reads_suite_seeds_and_rejects_bad_ones(tmp_path):
    from coremtl_lite.cli import main

    argv = ["bench", "--suites", "grounding", "--profile", "ci", "--seeds", "0", "--out", str(tmp_path)]
    assert main([*argv, "--suite-seeds", "grounding=0,1", "--finished-only"]) == 0
    meta = json.loads((tmp_path / "metadata.json").read_text())
    assert meta["suite_seeds"] == {"grounding": [0, 1]} and meta["runs_planned"] == 2 * 2
    bad_values = (
        ("grounding", "expected SUITE=SEEDS"),
        ("grounding=a", "comma-separated integers"),
        ("grounding=", "at least one seed"),
    )
    for bad, says in bad_values:
        with pytest.raises(SystemExit, match=says):
            main([*argv, "--suite-seeds", bad, "--finished-only"])
