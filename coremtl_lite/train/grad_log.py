"""Which term of the objective drives the shared encoder: per-term gradient norms and cosines.

Eq. 16 adds three terms to the task losses (lambda_rec L_rec, lambda_ind L_ind, lambda_cfa L_CFA).
Their weights only mean something relative to the tasks' *gradients* on the shared parameters, not to
their loss values: CKA and the relative-MSE CFA are scale-free, so a small loss value can still pull
hard. Every ``train.grad_log_every`` steps the trainer differentiates each weighted term separately
(``torch.autograd.grad`` with the graph kept, before the real backward) and logs

* ``grad/<term>_norm`` -- ||d term / d theta_shared||;
* ``grad/<term>_cos`` -- the cosine between that gradient and the task gradient (``task`` = the sum of
  the weighted task losses); negative means the term works against the tasks on the encoder;
* ``grad/<term>_share`` -- its norm as a share of the sum of all terms' norms.

This is the measurement behind the default loss weights (:class:`coremtl_lite.config.LossConfig`)
and behind tutorial 02's "which term drives the encoder" figure.

Equation numbers are the CORE-MTL paper's; docs/method.md states each one (label ``eq-N``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

__all__ = ["term_gradient_stats"]


def term_gradient_stats(
    terms: Mapping[str, Tensor], params: Sequence[nn.Parameter], reference: str = "task"
) -> dict[str, float]:
    """Norms, cosines with ``terms[reference]`` and shares of each term's gradient on ``params``.

    Terms without a graph (or not reaching ``params``) get norm 0. The graph is kept, so the caller
    can back-propagate the same losses afterwards. Returns ``{"<term>_norm", "<term>_cos",
    "<term>_share"}`` floats (``_cos`` only when the reference term is present and non-zero).
    """
    params = [p for p in params if p.requires_grad]
    flat: dict[str, Tensor] = {}
    for name, term in terms.items():
        if not isinstance(term, Tensor) or not term.requires_grad or not params:
            flat[name] = torch.zeros(1)
            continue
        grads = torch.autograd.grad(term.float(), params, retain_graph=True, allow_unused=True)
        flat[name] = torch.cat(
            [
                (g if g is not None else torch.zeros_like(p)).detach().float().reshape(-1)
                for g, p in zip(grads, params)
            ]
        )
    norms = {name: float(v.norm()) for name, v in flat.items()}
    total = sum(norms.values())
    out: dict[str, float] = {}
    ref = flat.get(reference)
    ref_norm = norms.get(reference, 0.0)
    for name, v in flat.items():
        out[f"{name}_norm"] = norms[name]
        out[f"{name}_share"] = norms[name] / total if total > 0 else 0.0
        if ref is not None and ref_norm > 0 and name != reference and norms[name] > 0:
            out[f"{name}_cos"] = float(v @ ref) / (norms[name] * ref_norm)
    return out
