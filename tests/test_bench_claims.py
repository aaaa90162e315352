"""The claim checks of coremtl_lite.bench.claims on hand-made rows with known answers."""

from coremtl_lite.bench.claims import ablation_improves_step_by_step, best_on_target, flat_cost, smallest_gap


def _row(suite, variant, domain, task, metric, mean):
    return {
        "suite": suite,
        "variant": variant,
        "domain": domain,
        "task": task,
        "metric": metric,
        "mean": mean,
        "std": 0.0,
        "n": 3,
    }


def test_best_on_target_and_smallest_gap():
    rows = [
        _row("sim2real", "core_mtl", "source", "segmentation", "mIoU", 0.60),
        _row("sim2real", "core_mtl", "target", "segmentation", "mIoU", 0.50),
        _row("sim2real", "ew", "source", "segmentation", "mIoU", 0.70),
        _row("sim2real", "ew", "target", "segmentation", "mIoU", 0.40),
        _row("sim2real", "core_mtl", "target", "depth", "abs_err", 0.9),
        _row("sim2real", "ew", "target", "depth", "abs_err", 0.5),
    ]
    claims = {c.claim: c.holds for c in best_on_target(rows)}
    assert claims == {
        "core_mtl is best on the target segmentation mIoU": True,
        "core_mtl is best on the target depth abs_err": False,
    }
    gap = smallest_gap(rows)
    assert len(gap) == 1 and gap[0].holds  # 0.10 vs 0.30 drop


def test_ablation_and_flat_cost():
    steps = ["vanilla", "ds", "ds+grounding", "ds+grounding+cka", "full"]
    rows = [
        _row("ablation", s, "source", "segmentation", "mIoU", 0.5 + 0.01 * i) for i, s in enumerate(steps)
    ]
    rows += [
        _row("ablation", s, "source", "depth", "abs_err", 0.5 - 0.01 * (i % 2)) for i, s in enumerate(steps)
    ]
    got = {c.claim: c.holds for c in ablation_improves_step_by_step(rows)}
    assert got == {
        "ablation improves step by step on source segmentation mIoU": True,
        "ablation improves step by step on source depth abs_err": False,
    }
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
