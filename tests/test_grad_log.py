"""Per-term gradient statistics on hand-made losses with known gradients, and their figure."""

from __future__ import annotations

import math

import pytest
import torch

from coremtl_lite.train import History
from coremtl_lite.train.grad_log import term_gradient_stats
from coremtl_lite.viz import gradient_terms_figure


def test_norms_cosines_and_shares_match_the_hand_computed_gradients():
    w = torch.nn.Parameter(torch.tensor([1.0, 2.0]))
    other = torch.nn.Parameter(torch.tensor(3.0))  # a parameter no term reaches
    terms = {
        "task": 3.0 * w[0],  # gradient (3, 0)
        "rec": 4.0 * w[1],  # gradient (0, 4): orthogonal to the task
        "cfa": -1.5 * w[0] + 0.0 * w[1],  # gradient (-1.5, 0): against the task
        "ind": torch.tensor(0.5),
    }  # no graph: norm 0
    stats = term_gradient_stats(terms, [w, other])
    assert stats["task_norm"] == pytest.approx(3.0) and stats["rec_norm"] == pytest.approx(4.0)
    assert stats["rec_cos"] == pytest.approx(0.0) and stats["cfa_cos"] == pytest.approx(-1.0)
    assert stats["ind_norm"] == 0.0 and "ind_cos" not in stats
    assert stats["task_share"] == pytest.approx(3.0 / 8.5) and sum(
        v for k, v in stats.items() if k.endswith("_share")
    ) == pytest.approx(1.0)
    # the graph is kept: the caller can still back-propagate
    sum(v for v in terms.values() if v.requires_grad).backward()
    assert torch.allclose(w.grad, torch.tensor([1.5, 4.0]))


def test_without_a_task_term_there_are_no_cosines():
    w = torch.nn.Parameter(torch.ones(3))
    stats = term_gradient_stats({"rec": (w**2).sum()}, [w])
    assert stats == {"rec_norm": pytest.approx(2 * math.sqrt(3)), "rec_share": 1.0}


def test_gradient_terms_figure_draws_every_logged_term():
    h = History(
        steps=[
            {
                "step": s,
                "grad/task_norm": 1.0,
                "grad/rec_norm": 0.5,
                "grad/rec_cos": 0.1,
                "grad/cfa_norm": 2.0,
                "grad/cfa_cos": -0.2,
            }
            for s in range(3)
        ]
    )
    fig = gradient_terms_figure(h)
    names = [(t.name, t.xaxis) for t in fig.data]
    assert names == [("task", "x"), ("rec", "x"), ("rec", "x2"), ("cfa", "x"), ("cfa", "x2")]
    assert list(fig.data[3].y) == [2.0, 2.0, 2.0]
