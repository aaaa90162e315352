"""The out-of-distribution study: its suites' plans, Theorem 2.4's numbers on hand-made models with known
answers, the band and scatter figures, the robustness streams, the data version in the run identity,
the OOD claims' verdicts, and the bench end to end with a fake run function."""

import json
import math

import pytest
import torch
from torch import nn

from coremtl_lite.bench import build_suites, run_bench
from coremtl_lite.bench.claims import (
    beats_each_baseline,
    gap_follows_bound,
    gap_grows_with_severity,
    welch_interval,
)
from coremtl_lite.bench.ood import factor_table, rho_curves, robustness_table, severity_curves, theorem24
from coremtl_lite.bench.runner import Run, execute, plan_runs
from coremtl_lite.bench.suites import FACTOR_DOMAINS, OOD_RHOS, SHIFT_DOMAINS, split_rho
from coremtl_lite.config import get_config
from coremtl_lite.data.scenes import ShadedScenes, shift_w1
from coremtl_lite.diagnostics.leakage import residual_vector
from coremtl_lite.diagnostics.ood_bound import (
    OOD_SEVERITIES,
    bound_fit,
    correlations,
    ood_bound_numbers,
    probe_scale,
)
from coremtl_lite.diagnostics.robustness import stream_names
from coremtl_lite.experiments import runs as runs_module
from coremtl_lite.tasks import tasks_from_info
from coremtl_lite.viz import band_curves, bound_scatter

SIZE, N = 16, 8
TASKS = tasks_from_info(ShadedScenes.task_info)
IMAGES = torch.rand(2, 3, SIZE, SIZE)
METHODS = ["ew", "uw", "pcgrad", "mgda", "cagrad", "stch", "ds", "core_mtl"]


def make_scenes(domain):
    return ShadedScenes(domain, size=SIZE, length=N, seed=5, offset=100)


class Constant(nn.Module):
    """Predicts the same thing for every image; its features ignore the image (L_leak = 0)."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(()))

    def forward(self, image):
        b, _, h, w = image.shape
        seg = torch.zeros(b, 7, h, w) + self.w
        seg[:, 0] += 1.0
        normal = torch.zeros(b, 3, h, w)
        normal[:, 2] = 1.0
        preds = {"segmentation": seg, "depth": torch.ones(b, 1, h, w) + self.w, "normal": normal}
        return {"preds": preds, "features": torch.ones(b, 4, h, w) + self.w}


# ------------------------------------------------------------------------------------------ suites
def test_the_ood_suites_plan_methods_x_seeds_x_domains():
    suites = build_suites()
    sev = suites["ood-severity"]
    runs = plan_runs(sev, "ci", (0, 1, 2))
    assert [v.name for v in sev.variants] == METHODS and len(runs) == 8 * 3
    assert sev.report_domains == ("source", "target", *SHIFT_DOMAINS, *FACTOR_DOMAINS)
    assert set(build_suites()["sim2real"].eval_domains) <= set(sev.eval_domains)  # its runs serve sim2real
    assert SHIFT_DOMAINS == ("shift:0", "shift:0.25", "shift:0.5", "shift:0.75", "shift:1")
    assert all(r.probes == ("ood_bound", "robustness") for r in runs)
    by = {r.variant.name: r.cfg for r in runs if r.seed == 0}
    assert by["core_mtl"].model.architecture == "dual_stream" and by["ds"].loss.lambda_cfa == 0
    assert by["stch"].model.architecture == "vanilla" and by["stch"].train.method == "stch"
    rho = suites["ood-rho"]
    runs_rho = plan_runs(rho, "ci", (0, 1, 2))
    assert len(runs_rho) == 8 * len(OOD_RHOS) * 3 and rho.report_domains == ("source", "target")
    assert {(split_rho(r.variant.name)[1], r.cfg.data.rho) for r in runs_rho} == {(x, x) for x in OOD_RHOS}
    # the default rho's runs are the ood-severity runs: trained once
    at_default = {r.key for r in runs_rho if split_rho(r.variant.name)[1] == 0.5}
    assert at_default == {r.key for r in runs}
    assert split_rho("core_mtl") is None and split_rho("ew@rho=0.9") == ("ew", 0.9)


def test_the_scenes_version_is_part_of_a_shaded_scenes_run_identity(monkeypatch):
    scenes_cfg = get_config("ci", ["data.dataset=shaded_scenes"])
    other = get_config("ci", ["data.dataset=digit_pairs"])
    before = runs_module.run_key(scenes_cfg), runs_module.run_key(other)
    monkeypatch.setattr(runs_module, "SCENES_VERSION", runs_module.SCENES_VERSION + 1)
    assert runs_module.run_key(scenes_cfg) != before[0]
    assert runs_module.run_key(other) == before[1]


# ------------------------------------------------------------------------------- Theorem 2.4 numbers
def test_a_model_blind_to_the_residual_has_no_leakage_no_gap_and_a_flat_bound():
    out = ood_bound_numbers(Constant(), TASKS, make_scenes, rho=0.5, n_risk=N, n_leak=N)
    assert out["L_leak"] == 0.0
    assert [p["severity"] for p in out["points"]] == list(OOD_SEVERITIES)
    for p in out["points"]:
        assert p["W1"] == pytest.approx(shift_w1(0.5, p["severity"])["sum"])
        # the same scenes in every domain: the same labels, the same constant predictions
        assert all(g == pytest.approx(0.0, abs=1e-6) for g in p["gap"].values())
    assert out["points"][0]["W1"] == 0.0 and out["points"][-1]["W1"] > out["points"][1]["W1"] > 0
    x = [out["L_leak"] * p["W1"] for p in out["points"]]
    assert bound_fit(x, [p["gap"]["total"] for p in out["points"]])["K"] == pytest.approx(0.0, abs=1e-6)


def test_a_stream_linear_in_the_residual_has_its_slope_as_l_leak():
    source, widest = make_scenes("source"), make_scenes("shift:1")
    scale = probe_scale(source, widest, range(N))

    def linear(batch):  # z_s = z_p = the normalised residual vector itself
        z = scale(residual_vector(batch["factors"]["residual"])).float()
        return z, z

    out = ood_bound_numbers(Constant(), TASKS, make_scenes, rho=0.5, n_risk=N, n_leak=N, streams=linear)
    clean = scale(residual_vector(source.sample_factors(range(N))["residual"]))
    spread = math.sqrt(float(((clean - clean.mean(0)) ** 2).sum(1).mean()))
    # Delta z_s = Delta r~ exactly, so every ratio is 1 / (z_s's spread): the sup and the quantile agree
    assert out["L_leak"] == pytest.approx(1.0 / spread, rel=1e-4)
    assert out["L_leak_q90"] == pytest.approx(out["L_leak"], rel=1e-4)


def test_bound_fit_takes_the_smallest_slope_and_counts_what_no_slope_bounds():
    assert bound_fit([0.0, 1.0, 2.0], [0.0, 0.5, 2.0]) == {"K": 1.0, "lambda": 0.0, "violations": 0}
    assert bound_fit([0.0, 1.0], [0.1, 0.2]) == {"K": 0.2, "lambda": 0.0, "violations": 1}
    assert bound_fit([1.0, 2.0], [-1.0, -0.5])["K"] == 0.0


def test_correlations_and_their_bootstrap_over_runs():
    x = [0.0, 1.0, 2.0, 0.0, 1.5, 3.0]
    runs = ["a", "a", "a", "b", "b", "b"]
    exact = correlations(x, [2 * v for v in x], runs, n_boot=200)
    assert exact["pearson"] == pytest.approx(1.0) and exact["spearman"] == pytest.approx(1.0)
    assert exact["pearson_lo"] == pytest.approx(1.0) and exact["runs"] == 2 and exact["n"] == 6
    anti = correlations(x, [-v for v in x], runs, n_boot=200)
    assert anti["pearson"] == pytest.approx(-1.0) and anti["pearson_hi"] == pytest.approx(-1.0)
    one_run = correlations([0.0, 1.0, 2.0], [0.0, 1.0, 3.0], ["a"] * 3)
    assert math.isnan(one_run["pearson_lo"])  # no resampling over a single run


def _ood_record(variant, seed, leak, slope=1.0, dual=None):
    points = []
    for s in OOD_SEVERITIES:
        w1 = shift_w1(0.5, s)["sum"]
        gap = {"segmentation": slope * leak * w1, "depth": 0.5 * leak * w1}
        points.append(
            {
                "severity": s,
                "W1": w1,
                "risk_source": {},
                "risk_shift": {},
                "gap": gap | {"total": sum(gap.values())},
            }
        )
    return {
        "variant": variant,
        "seed": seed,
        "ood_bound": {"L_leak": leak, "L_leak_q90": leak, "points": points},
        "robustness": {
            "intra": 2.0 + seed,
            "cross": 3.0,
            "streams": stream_names(
                Dual() if (dual if dual is not None else variant in ("ds", "core_mtl")) else Constant(),
                IMAGES,
            ),
        },
    }


class Dual(Constant):
    """A model that outputs both streams (no decoder: like the ablation's ``ds``)."""

    def forward(self, image):
        out = super().forward(image)
        return out | {"z_s": out["features"], "z_p": out["features"].mean(dim=(2, 3))}


def test_theorem24_collects_every_run_and_fits_the_bound():
    records = [
        _ood_record(v, s, leak, slope)
        for v, leak, slope in (("ew", 2.0, 1.0), ("core_mtl", 0.5, 2.0))
        for s in (0, 1)
    ]
    out = theorem24(records, n_boot=100)
    assert len(out["points"]) == 4 * len(OOD_SEVERITIES) * 3  # runs x severities x (2 tasks + total)
    seg = out["fits"]["segmentation"]
    assert seg["K"] == pytest.approx(2.0) and seg["violations"] == 0 and seg["runs"] == 4
    assert out["fits"]["depth"]["K"] == pytest.approx(0.5) and out["fits"]["depth"][
        "pearson"
    ] == pytest.approx(1.0)
    p = next(
        q for q in out["points"] if q["method"] == "ew" and q["severity"] == 1.0 and q["task"] == "depth"
    )
    assert p["x"] == pytest.approx(2.0 * p["W1"]) and p["gap"] == pytest.approx(0.5 * p["x"])
    header, body = robustness_table(records)
    assert body[0][0] == "core_mtl" and "dual stream" in body[0][1] and "no streams" in body[1][1]
    assert body[0][2] == "2.5 ± 0.71" and body[0][4] == "2"
    fig = bound_scatter([q for q in out["points"] if q["task"] == "segmentation"], seg["K"], seg)
    assert [t.name for t in fig.data][:2] == ["ew", "core_mtl"] and len(fig.data) == 3
    top = max(q["x"] for q in out["points"] if q["task"] == "segmentation")
    assert list(fig.data[-1].y) == pytest.approx([0.0, 2.0 * top]) and fig.data[-1].line.dash == "dash"
    assert "Pearson" in fig.layout.title.text


def test_theorem24_tests_l_leak_across_models_apart_from_the_shift():
    """A hand-made study where the gap grows with the shift (W1) but *shrinks* with L_leak: the
    correlation over every severity is positive (W1 carries it), the one across models at the strongest
    shift is -1, and the claims say so."""
    leaks = {"ew": 2.0, "uw": 1.8, "core_mtl": 1.6}
    records = [
        _ood_record(v, s, leak, slope=(3.0 - leak) / leak) for v, leak in leaks.items() for s in (0, 1)
    ]
    out = theorem24(records, n_boot=200)
    assert out["fits"]["segmentation"]["pearson"] > 0.9
    seg = out["across_models"]["segmentation"]
    assert seg["severity"] == 1.0 and seg["runs"] == 6
    assert seg["pearson"] == pytest.approx(-1.0) and seg["pearson_hi"] == pytest.approx(-1.0)
    assert out["across_models"]["depth"]["pearson"] == pytest.approx(1.0)  # depth gap = 0.5 L_leak W1
    verdicts = {c.claim: c.verdict for c in gap_follows_bound(out)}
    assert (
        verdicts[
            "the segmentation OOD gap grows with L_leak x W1 over every severity (Theorem 2.4; carried by W1)"
        ]
        == "reproduced"
    )
    key = "at shift:1, a model with a larger L_leak has a larger {} OOD gap (Theorem 2.4's L_leak factor)"
    assert verdicts[key.format("segmentation")] == "not reproduced"
    assert verdicts[key.format("depth")] == "reproduced"
    # fewer than 3 runs: no correlation, the claim is inconclusive
    two = theorem24(records[:2], n_boot=50)
    assert math.isnan(two["across_models"]["depth"]["pearson"])
    assert {c.verdict for c in gap_follows_bound(two) if "larger L_leak" in c.claim} == {"inconclusive"}


def test_stream_names_say_what_a_vanilla_model_compares():
    assert stream_names(Dual(), IMAGES) == "z_s / z_p (dual stream)"
    assert stream_names(Constant(), IMAGES) == "F / GAP(F) (vanilla: no streams)"
    assert "no streams" in stream_names(Constant(), IMAGES, "channels")


# ------------------------------------------------------------------------------------ curves, tables
def _row(suite, variant, domain, task, metric, mean, std=0.01, n=3):
    return {
        "suite": suite,
        "variant": variant,
        "domain": domain,
        "task": task,
        "metric": metric,
        "mean": mean,
        "std": std,
        "n": n,
    }


def _severity_rows():
    rows = []
    for v, base in (("trivial", 0.1), ("ew", 0.6), ("core_mtl", 0.7)):
        for k, d in enumerate(("source", *SHIFT_DOMAINS)):
            drop = 0.0 if d == "source" else 0.1 * k
            rows.append(
                _row("ood-severity", v, d, "segmentation", "mIoU", base - (0 if v == "trivial" else drop))
            )
        rows.append(_row("ood-severity", v, "only:colour", "segmentation", "mIoU", base - 0.2))
    return rows


def test_band_curves_have_a_band_and_a_line_per_method_and_a_dashed_trivial_line():
    curves = severity_curves(_severity_rows(), "segmentation", "mIoU")
    assert list(curves) == ["trivial", "ew", "core_mtl"]
    assert curves["ew"]["x"] == [0.0, 0.25, 0.5, 0.75, 1.0] and curves["ew"]["mean"][-1] == pytest.approx(0.1)
    fig = band_curves(curves, "t", "severity", "mIoU")
    assert len(fig.data) == 1 + 2 * 2
    assert fig.data[0].line.dash == "dash" and fig.data[0].fill is None
    band, line = fig.data[1], fig.data[2]
    assert band.fill == "toself" and len(band.x) == 10 and band.showlegend is False and line.name == "ew"
    assert band.y[0] == pytest.approx(curves["ew"]["mean"][0] + 0.01)
    assert band.y[-1] == pytest.approx(curves["ew"]["mean"][0] - 0.01)
    with pytest.raises(ValueError, match="'bad' has 2 x"):
        band_curves({"bad": {"x": [0, 1], "mean": [1.0], "std": [0.0]}}, "t", "x", "y")


def test_factor_table_and_rho_curves():
    header, body = factor_table(_severity_rows(), "segmentation", "mIoU")
    assert header[:3] == ["variant", "source mIoU", "only:colour mIoU"]
    ew = next(line for line in body if line[0] == "ew")
    assert ew[1] == "0.6 ± 0.01" and ew[2] == "0.4 ± 0.01 (-0.2)" and ew[3] == "–"
    rows = [
        _row("ood-rho", f"{m}@rho={r:g}", "target", "segmentation", "mIoU", v + r)
        for m, v in (("ew", 0.3), ("core_mtl", 0.4))
        for r in (0.9, 0.0, 0.5)
    ]
    trivial = [
        _row("ood-rho", f"trivial@rho={r:g}", "target", "segmentation", "mIoU", 0.1) for r in (0, 0.5, 0.9)
    ]
    curves = rho_curves(trivial + rows, "segmentation", "mIoU")
    assert list(curves) == ["trivial", "ew", "core_mtl"]
    assert curves["ew"]["x"] == [0.0, 0.5, 0.9] and curves["ew"]["mean"] == pytest.approx([0.3, 0.8, 1.2])
    assert curves["trivial"]["x"] == [0.0, 0.5, 0.9] and curves["trivial"]["mean"] == [0.1] * 3


# ------------------------------------------------------------------------------------------ claims
def test_welch_interval_and_the_verdicts():
    a, b = _row("s", "a", "d", "t", "m", 0.7, 0.01), _row("s", "b", "d", "t", "m", 0.5, 0.01)
    lo, hi = welch_interval(a, b)
    assert lo < 0.2 < hi and lo > 0
    assert welch_interval(_row("s", "a", "d", "t", "m", 0.7, 0.0, n=1), b) is None
    rows = [
        _row("ood-rho", "core_mtl@rho=0.5", "target", "segmentation", "mIoU", 0.7),
        _row("ood-rho", "ew@rho=0.5", "target", "segmentation", "mIoU", 0.5),  # clearly worse
        _row("ood-rho", "uw@rho=0.5", "target", "segmentation", "mIoU", 0.9),  # clearly better
        _row("ood-rho", "pcgrad@rho=0.5", "target", "segmentation", "mIoU", 0.69, 0.2),  # within noise
        _row("ood-rho", "core_mtl@rho=0.5", "target", "depth", "abs_err", 0.2),
        _row("ood-rho", "ew@rho=0.5", "target", "depth", "abs_err", 0.3),
    ]  # lower is better: ours wins
    got = {
        c.claim: c.verdict
        for c in beats_each_baseline(
            rows, "ood-rho", "target", "core_mtl@rho=0.5", ["ew@rho=0.5", "uw@rho=0.5", "pcgrad@rho=0.5"]
        )
    }
    assert got == {
        "core_mtl@rho=0.5 beats ew@rho=0.5 on ood-rho target segmentation mIoU": "reproduced",
        "core_mtl@rho=0.5 beats uw@rho=0.5 on ood-rho target segmentation mIoU": "not reproduced",
        "core_mtl@rho=0.5 beats pcgrad@rho=0.5 on ood-rho target segmentation mIoU": "inconclusive",
        "core_mtl@rho=0.5 beats ew@rho=0.5 on ood-rho target depth abs_err": "reproduced",
    }


def test_gap_grows_with_severity_and_follows_the_bound():
    rows = _severity_rows() + [
        _row("ood-severity", "ds", "shift:0", "segmentation", "mIoU", 0.5),
        _row("ood-severity", "ds", "shift:1", "segmentation", "mIoU", 0.6),
    ]
    got = {c.claim: c.holds for c in gap_grows_with_severity(rows)}
    assert got == {
        "ew's segmentation mIoU degrades from shift:0 to shift:1": True,
        "core_mtl's segmentation mIoU degrades from shift:0 to shift:1": True,
        "ds's segmentation mIoU degrades from shift:0 to shift:1": False,
    }
    fit = {"pearson": 0.8, "spearman": 0.7, "n": 30, "runs": 6, "K": 1.5, "violations": 0}
    theorem = {
        "fits": {
            "segmentation": fit | {"pearson_lo": 0.5, "pearson_hi": 0.9},
            "depth": fit | {"pearson_lo": -0.2, "pearson_hi": 0.9},
        }
    }
    claims = gap_follows_bound(theorem)
    assert [c.verdict for c in claims] == ["reproduced", "inconclusive"] and claims[0].interval == (0.5, 0.9)
    assert gap_follows_bound(None) == []


# ------------------------------------------------------------------------------------- end to end
def _fake_run_fn(calls):
    def run_fn(cfg, domains, probes=()):
        calls.append((cfg.train.method, cfg.model.architecture, tuple(probes)))
        k = len(calls)
        res = {
            d: {
                "segmentation": {"mIoU": 0.5 - 0.1 * j + 0.01 * k},
                "depth": {"abs_err": 0.2 + 0.1 * j},
                "normal": {"mean": 20.0 + j},
            }
            for j, d in enumerate(domains)
        }
        rec = _ood_record("x", cfg.train.seed, 0.1 * k, dual=cfg.model.architecture == "dual_stream")
        return {"results": res, "trivial": res, "epoch_seconds": 1.0, **{p: rec[p] for p in probes}}

    return run_fn


def test_the_ood_severity_suite_end_to_end_with_a_fake_run(tmp_path):
    calls = []
    rows = run_bench(
        ["ood-severity"],
        profile="ci",
        seeds=(0, 1),
        out_dir=tmp_path,
        run_fn=_fake_run_fn(calls),
        progress=False,
    )
    assert len(calls) == 16 and all(c[2] == ("ood_bound", "robustness") for c in calls)
    assert {r["domain"] for r in rows} == {
        "source",
        "target",
        *SHIFT_DOMAINS,
        *FACTOR_DOMAINS,
    }  # the reported domains
    assert rows[0]["variant"] == "trivial"
    study = json.loads((tmp_path / "ood_study.json").read_text())
    assert len(study["theorem24"]["points"]) == 16 * len(OOD_SEVERITIES) * 3
    assert {p["method"] for p in study["theorem24"]["points"]} == set(METHODS)
    assert [r[0] for r in study["robustness"]["rows"]][:2] == ["ds", "core_mtl"]
    per_run = study["robustness"]["runs"]
    assert len({(r["variant"], r["seed"]) for r in per_run}) == len(per_run) == 16  # 8 methods x 2 seeds
    assert {r["seed"] for r in per_run} == {0, 1} and {r["variant"] for r in per_run} >= {"ds", "core_mtl"}
    assert all({"intra", "cross", "streams"} <= set(r) for r in per_run)
    page = (tmp_path / "report.html").read_text()
    assert "Theorem 2.4" in page and "which factor breaks which model" in page and "toself" in page
    # a second call reads every run back
    run_bench(
        ["ood-severity"],
        profile="ci",
        seeds=(0, 1),
        out_dir=tmp_path,
        run_fn=_fake_run_fn(calls),
        progress=False,
    )
    assert len(calls) == 16


def test_a_stored_run_without_the_probes_is_trained_again_once(tmp_path):
    suite = build_suites()["ood-severity"]
    run = plan_runs(suite, "ci", (0,))[-1]
    bare = Run(run.suite, run.variant, run.seed, run.cfg, run.domains, run.task)  # no probes: like sim2real's
    calls = []
    execute([bare], tmp_path, run_fn=lambda cfg, domains: _fake_run_fn(calls)(cfg, domains), progress=False)
    assert calls[-1][2] == ()
    records = execute([run], tmp_path, run_fn=_fake_run_fn(calls), progress=False)
    assert len(calls) == 2 and calls[-1][2] == ("ood_bound", "robustness") and "ood_bound" in records[0]
    execute([run, bare], tmp_path, run_fn=_fake_run_fn(calls), progress=False)
    assert len(calls) == 2
    # a suite sharing the run with more domains retrains it for its domains and the stored ones and probes
    wider = Run(run.suite, run.variant, run.seed, run.cfg, (*run.domains, "shift:0.1"), run.task)
    records = execute([wider], tmp_path, run_fn=_fake_run_fn(calls), progress=False)
    assert len(calls) == 3 and calls[-1][2] == ("ood_bound", "robustness")
    assert set(records[0]["results"]) == {*run.domains, "shift:0.1"}
    execute([run, bare, wider], tmp_path, run_fn=_fake_run_fn(calls), progress=False)
    assert len(calls) == 3


def test_finished_only_reports_the_finished_runs_and_names_the_missing_ones(tmp_path):
    calls = []
    kw = dict(profile="ci", seeds=(0, 1), out_dir=tmp_path, progress=False)
    run_bench(["ood-severity"], run_fn=_fake_run_fn(calls), **kw)
    meta = json.loads((tmp_path / "metadata.json").read_text())
    assert meta["complete"] is True and meta["missing_runs"] == [] and meta["runs_planned"] == 16
    gone = next(r for r in plan_runs(build_suites()["ood-severity"], "ci", (0, 1)) if r.variant.name == "ew")
    assert gone.seed == 0
    (tmp_path / "runs" / f"{gone.key}.json").unlink()
    n_before = len(calls)
    rows = run_bench(["ood-severity"], run_fn=_fake_run_fn(calls), finished_only=True, **kw)
    assert len(calls) == n_before  # nothing trained
    assert not (tmp_path / "runs" / f"{gone.key}.json").exists()
    n = {(r["variant"], r["domain"], r["task"], r["metric"]): r["n"] for r in rows}
    assert n[("ew", "shift:1", "segmentation", "mIoU")] == 1  # one seed left
    assert n[("uw", "shift:1", "segmentation", "mIoU")] == 2
    meta = json.loads((tmp_path / "metadata.json").read_text())
    assert meta["complete"] is False and meta["finished_only"] is True and meta["runs_planned"] == 16
    assert meta["missing_runs"] == [
        {"suite": "ood-severity", "variant": "ew", "seed": 0, "task": None, "key": gone.key}
    ]
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved == json.loads(json.dumps(rows))
    study = json.loads((tmp_path / "ood_study.json").read_text())
    ew_points = {(p["method"], p["seed"]) for p in study["theorem24"]["points"] if p["method"] == "ew"}
    assert ew_points == {("ew", 1)}
    page = (tmp_path / "report.html").read_text()
    assert "incomplete results: 15 of 16 runs finished; missing: ood-severity/ew seed 0" in page
    # nothing finished: every planned run is missing, and no study is left behind
    empty = tmp_path / "empty"
    kw["out_dir"] = empty
    rows = run_bench(["ood-severity"], run_fn=_fake_run_fn(calls), finished_only=True, **kw)
    meta = json.loads((empty / "metadata.json").read_text())
    assert rows == [] and len(meta["missing_runs"]) == 16 and not (empty / "ood_study.json").exists()


def test_the_bench_command_says_when_its_results_are_incomplete(tmp_path, capsys):
    from coremtl_lite.cli import main

    argv = ["bench", "--suites", "ood-severity", "--profile", "ci", "--seeds", "0", "--out", str(tmp_path)]
    assert main([*argv, "--finished-only", "train.progress=false"]) == 0
    out = capsys.readouterr().out
    assert "incomplete results: 0 of 8 runs finished; missing: ood-severity/ew seed 0" in out
    assert "ood-severity/core_mtl seed 0" in out and "more" not in out  # all 8 named
    assert not (tmp_path / "runs" / "checkpoints").exists() and list((tmp_path / "runs").iterdir()) == []
