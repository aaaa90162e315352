"""The claim checks of coremtl_lite.bench.claims on hand-made rows with known answers."""

from coremtl_lite.bench.claims import ablation_improves_step_by_step, best_on_target, flat_cost, smallest_gap


def _row(suite, variant, domain, task, metric, mean, std=0.0, n=3):
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


def test_best_on_target_and_smallest_gap_follow_the_intervals():
    rows = [
        _row("sim2real", "core_mtl", "source", "segmentation", "mIoU", 0.60, 0.01),
        _row("sim2real", "core_mtl", "target", "segmentation", "mIoU", 0.50, 0.01),
        _row("sim2real", "ew", "source", "segmentation", "mIoU", 0.70, 0.01),
        _row("sim2real", "ew", "target", "segmentation", "mIoU", 0.40, 0.01),
        _row("sim2real", "stl", "target", "segmentation", "mIoU", 0.90, 0.01),  # not a competitor
        _row("sim2real", "core_mtl", "target", "depth", "abs_err", 0.9, 0.01),
        _row("sim2real", "ew", "target", "depth", "abs_err", 0.5, 0.01),
        _row("sim2real", "core_mtl", "target", "normal", "mean", 20.0, 2.0),
        _row("sim2real", "ew", "target", "normal", "mean", 20.5, 2.0),
    ]
    claims = {c.claim: c for c in best_on_target(rows)}
    assert {k: c.verdict for k, c in claims.items()} == {
        "core_mtl is best on the sim2real target segmentation mIoU": "reproduced",
        "core_mtl is best on the sim2real target depth abs_err": "not reproduced",  # lower is better
        "core_mtl is best on the sim2real target normal mean": "inconclusive",  # 0.5 deg apart, std 2
    }
    seg = claims["core_mtl is best on the sim2real target segmentation mIoU"]
    assert seg.interval[0] > 0 and seg.interval[0] < 0.1 < seg.interval[1]  # around 0.50 - 0.40
    assert "best other ew 0.4 ± 0.01" in seg.evidence and "n = 3 seeds" in seg.evidence
    (gap,) = smallest_gap(rows)  # 0.10 against 0.30 drop; std of each drop sqrt(2) x 0.01
    assert gap.verdict == "reproduced" and gap.interval[0] < 0.2 < gap.interval[1]
    one_seed = [{**r, "n": 1} for r in rows]
    assert {c.verdict for c in best_on_target(one_seed)} == {"inconclusive"}  # no spread, no verdict


def test_ablation_verdict_is_the_weakest_steps():
    steps = ["vanilla", "ds", "ds+grounding", "ds+grounding+cka", "full"]
    rows = [
        _row("ablation", s, "source", "segmentation", "mIoU", 0.5 + 0.1 * i, 0.01)
        for i, s in enumerate(steps)
    ]
    rows += [
        _row("ablation", s, "source", "depth", "abs_err", 0.5 - 0.1 * (i % 2), 0.01)
        for i, s in enumerate(steps)
    ]
    rows += [
        _row("ablation", s, "source", "normal", "mean", 20.0 - 0.1 * i, 1.0) for i, s in enumerate(steps)
    ]
    got = {c.claim: c for c in ablation_improves_step_by_step(rows)}
    assert {k: c.verdict for k, c in got.items()} == {
        "ablation improves step by step on source segmentation mIoU": "reproduced",
        "ablation improves step by step on source depth abs_err": "not reproduced",  # every other step worse
        "ablation improves step by step on source normal mean": "inconclusive",  # 0.1 deg steps, std 1
    }
    assert (
        "each step: better, worse, better, worse"
        in got["ablation improves step by step on source depth abs_err"].evidence
    )
    assert got["ablation improves step by step on source segmentation mIoU"].interval[0] > 0


def test_flat_cost():
    rows = [
        _row("scalability", "core_mtl@10", "-", "all", "seconds/epoch", 3.0),
        _row("scalability", "core_mtl@40", "-", "all", "seconds/epoch", 3.3),
        _row("scalability", "pcgrad@10", "-", "all", "seconds/epoch", 2.0),
        _row("scalability", "pcgrad@40", "-", "all", "seconds/epoch", 3.0),
    ]
    got = {c.claim: c.holds for c in flat_cost(rows)}
    assert got == {
        "core_mtl's time per epoch stays flat from 10 to 40 tasks": True,
        "pcgrad's time per epoch grows from 10 to 40 tasks": False,
    }
