"""How much does a multi-task model lean on non-causal inputs? MT-CRL's analysis tools (Hu et al. 2022).

* :func:`input_saliency` / :func:`saliency_map` -- input-gradient saliency (Simonyan et al. 2014) of
  the true-class output ``f_t(Phi(x))[y]`` (MT-CRL §2.2, Fig. 3 and 7);
* :func:`spurious_score` -- rho_spur, the share of that saliency on non-causal factors (MT-CRL §2.2);
  :func:`causal_masks_of` finds a dataset's causal masks (fixed, or per sample) and
  :func:`chance_spurious_score` the level of a uniform saliency;
* :func:`task_module_gradients` -- the task-to-module gradients of an MT-CRL model on one split, and
  their (valid - train) difference (MT-CRL §4.1 case study, Fig. 4-5, 13-14);
* :func:`task_similarity` -- the task-similarity graph induced by the routing graph A (appendix G,
  Fig. 10 and 17);
* their figures are in :mod:`coremtl_lite.viz` (``plot_saliency``, ``plot_routing``, ...).

Datasets with known causal structure (``MultiSEM``) carry ``causal_mask[task]``: a boolean mask over
the input marking the task's causal factors; everything else is non-causal. ``ConfoundedScenes`` gives
one mask per sample (``causal_masks_for(batch)``): its objects move. Where the factors are not
separate inputs (``DigitPairs``: the colours fill the digits' pixels), the dataset maps an input
gradient to its generative factors (``factor_gradients``, ``causal_factors``) and the score is taken
on the factors (:func:`factor_spurious_score`). :func:`spurious_scores_for` picks the right one.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from coremtl_lite.protocols import (
    CausalMaskDataset,
    FactorGradientDataset,
    ModularModel,
    PerSampleCausalMasks,
    ToggleableDataset,
)


def _preds(model: nn.Module, x: Tensor) -> dict[str, Tensor]:
    out = model(x)
    if isinstance(out, dict) and "preds" in out:
        return out["preds"]
    raise TypeError(f"model(x) must return a dict with 'preds' (CONTRIBUTING.md), got {type(out).__name__}")


def true_class_output(pred: Tensor, target: Tensor, task: str) -> Tensor:
    """``f_t(Phi(x))[y]`` per sample: the logit of the true class (B,) (MT-CRL §2.2's Grad(F))."""
    if pred.dim() != 2:
        raise ValueError(
            f"task {task!r}: saliency needs classification logits (B, C), got {tuple(pred.shape)}"
        )
    target = target.long().view(-1)
    if target.shape[0] != pred.shape[0]:
        raise ValueError(f"task {task!r}: {pred.shape[0]} predictions but {target.shape[0]} labels")
    return pred.gather(1, target[:, None]).squeeze(1)


def input_saliency(model: nn.Module, batch: dict, task: str, signed: bool = False) -> Tensor:
    """``|d f_t(Phi(x))[y] / dx|`` for every sample and input element, shaped like ``batch['image']``
    (``signed=True``: the gradient itself, for the chain rule to generative factors).

    The model is put in eval mode for the pass and restored afterwards.
    """
    if "image" not in batch or task not in batch:
        raise KeyError(f"input_saliency needs batch['image'] and batch[{task!r}]; got keys {sorted(batch)}")
    x = batch["image"].detach().clone().requires_grad_(True)
    was_training = model.training
    model.eval()
    try:
        with torch.enable_grad():
            preds = _preds(model, x)
            if task not in preds:
                raise KeyError(f"the model predicts {sorted(preds)}, not task {task!r}")
            out = true_class_output(preds[task], batch[task].to(x.device), task)
            (grad,) = torch.autograd.grad(out.sum(), x)
    finally:
        model.train(was_training)
    return grad if signed else grad.abs()


def _expand_mask(mask: Tensor, like: Tensor) -> Tensor:
    """Broadcast a causal mask over the input ``like`` (B, ...): one mask for every sample -- (D,) for
    vectors, (H, W) or (C, H, W) for images -- or one per sample with the batch dimension first and as
    many dimensions as the input, e.g. (B, D) or (B, 1, H, W)."""
    mask = mask.to(device=like.device, dtype=torch.bool)
    shape, trailing = tuple(like.shape), tuple(like.shape[1:])
    if mask.dim() == like.dim() and mask.shape[0] == shape[0]:  # one mask per sample
        try:
            return mask.expand(shape)
        except RuntimeError:
            pass
    elif tuple(mask.shape) == trailing:
        return mask[None].expand(shape)
    elif like.dim() == 4 and tuple(mask.shape) == trailing[1:]:
        return mask[None, None].expand(shape)
    raise ValueError(f"causal mask of shape {tuple(mask.shape)} does not fit inputs of shape {shape}")


def causal_masks_of(dataset, batch: dict) -> dict[str, Tensor]:
    """The causal masks of ``batch``: per sample from ``dataset.causal_masks_for(batch)`` when the dataset
    has one (ConfoundedScenes), else the dataset's fixed ``causal_mask`` (DigitPairs, MultiSEM)."""
    if isinstance(dataset, PerSampleCausalMasks):
        return dataset.causal_masks_for(batch)
    if isinstance(dataset, CausalMaskDataset):
        return dataset.causal_mask
    raise TypeError(f"{type(dataset).__name__} knows no causal factors (no causal_mask / causal_masks_for)")


def spurious_score(model: nn.Module, batch: dict, task: str, causal_mask: Tensor) -> float:
    """rho_spur = sum_{F non-causal} Grad(F) / sum_F Grad(F) (MT-CRL §2.2).

    Grad(F) = sum over the samples of ``|d f_t(Phi(x))[y] / dF|``; the factors are input elements
    (pixels, SEM dimensions) and ``causal_mask`` marks the causal ones for ``task``. 0: the model
    only uses causal inputs; 1: only non-causal ones.
    """
    sal = input_saliency(model, batch, task)
    mask = _expand_mask(causal_mask, sal)
    total = sal.sum()
    if float(total) == 0.0:
        return 0.0
    return float(sal[~mask].sum() / total)


def chance_spurious_score(causal_mask: Tensor, like: Tensor) -> float:
    """The rho_spur of a model whose saliency is the same everywhere: the share of non-causal input
    elements (``like`` is the input batch). rho_spur is read against this level."""
    return float((~_expand_mask(causal_mask, like)).float().mean())


def spurious_scores(
    model: nn.Module, batch: dict, causal_masks: dict[str, Tensor], tasks: Sequence[str] | None = None
) -> dict[str, float]:
    """rho_spur per task, and their mean under ``"mean"``."""
    tasks = list(tasks or causal_masks)
    out = {t: spurious_score(model, batch, t, causal_masks[t]) for t in tasks}
    out["mean"] = sum(out[t] for t in tasks) / len(tasks)
    return out


def _factor_share(grads: dict[str, Tensor], causal: Sequence[str]) -> float:
    """sum_{F non-causal} Grad(F) / sum_F Grad(F) for ``{factor: (B, n)}`` signed gradients."""
    totals = {name: float(g.abs().sum()) for name, g in grads.items()}
    total = sum(totals.values())
    if total == 0.0:
        return 0.0
    return sum(v for name, v in totals.items() if name not in causal) / total


def factor_spurious_score(model: nn.Module, dataset, batch: dict, task: str) -> float:
    """rho_spur on generative factors (MT-CRL §2.2): Grad(F) = sum_x |d f_t(Phi(x))[y] / dF| for every
    factor dimension F of ``dataset.factor_gradients`` (the chain rule from the input gradient), the
    causal ones being ``dataset.causal_factors[task]``."""
    grads = dataset.factor_gradients(batch, input_saliency(model, batch, task, signed=True))
    return _factor_share(grads, dataset.causal_factors[task])


def factor_chance_score(dataset, batch: dict, task: str, seed: int = 0) -> float:
    """The factor-space rho_spur of an input gradient that is isotropic noise (one seeded standard-normal
    draw per input element): the level to read :func:`factor_spurious_score` against. It weighs each
    factor by how strongly it moves the image, as a model that has learnt nothing would."""
    noise = torch.randn(batch["image"].shape, generator=torch.Generator().manual_seed(seed))
    return _factor_share(
        dataset.factor_gradients(batch, noise.to(batch["image"].device)), dataset.causal_factors[task]
    )


def spurious_scores_for(model: nn.Module, dataset, batch: dict, tasks: Sequence[str]) -> dict[str, float]:
    """``{task: rho_spur, "mean": ..., "chance": ...}`` on ``batch`` of ``dataset``: on the generative
    factors when the dataset has ``factor_gradients`` (DigitPairs), else on the input elements with its
    causal masks (:func:`causal_masks_of`). ``chance`` is the mean chance level over the tasks."""
    tasks = list(tasks)
    if isinstance(dataset, FactorGradientDataset):
        out = {t: factor_spurious_score(model, dataset, batch, t) for t in tasks}
        chance = [factor_chance_score(dataset, batch, t) for t in tasks]
    else:
        masks = causal_masks_of(dataset, batch)
        out = {t: spurious_score(model, batch, t, masks[t]) for t in tasks}
        chance = [chance_spurious_score(masks[t], batch["image"]) for t in tasks]
    out["mean"] = sum(out[t] for t in tasks) / len(tasks)
    out["chance"] = sum(chance) / len(chance)
    return out


def saliency_map(model: nn.Module, batch: dict, task: str) -> Tensor:
    """Mean input saliency over the batch (and colour channels): (H, W) for images, (D,) for vectors
    (MT-CRL Fig. 3 and 7)."""
    sal = input_saliency(model, batch, task).mean(0)
    return sal.mean(0) if sal.dim() == 3 else sal


def accuracy(model: nn.Module, batch: dict, tasks: Sequence[str]) -> dict[str, float]:
    """Top-1 accuracy per task on a batch, and the mean under ``"mean"`` (eval mode, no grad)."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            preds = _preds(model, batch["image"])
    finally:
        model.train(was_training)
    out = {t: float((preds[t].argmax(1) == batch[t].view(-1)).float().mean()) for t in tasks}
    out["mean"] = sum(out[t] for t in tasks) / len(tasks)
    return out


def intervention_sensitivity(
    model: nn.Module, dataset, tasks: Sequence[str], n: int = 256
) -> dict[str, float]:
    """How much task t's prediction moves when only the *other* task's causal factor is intervened on.

    For a dataset with a ``toggle(semantic, task)`` intervention (:class:`~coremtl_lite.data.confounded.
    ConfoundedScenes`): the first ``n`` scenes are rendered as they are (x) and after do(Y_o := 1 - Y_o)
    for the other task o (x', task t's label unchanged). The residual factors are drawn again from the
    same random numbers for the new semantic factors, so the lights, noise and the other surfaces stay
    and only what depends on the changed object's class follows it (in ShadedScenes' source domain an
    object's colour and stripes are keyed to its class). The score is the mean
    ``|P(Y_t = 1 | x) - P(Y_t = 1 | x')|``: 0 for a model that ignores o's factor, as a causal predictor
    of t does; large for one that reads o's objects as a shortcut. An interventional counterpart of
    rho_spur, possible because the renderer is the SCM. Returns the score per task and ``"mean"``.
    """
    if not isinstance(dataset, ToggleableDataset):
        raise TypeError(f"{type(dataset).__name__} has no toggle(semantic, task) intervention")
    device = next(model.parameters()).device
    idx = torch.arange(min(n, len(dataset)))
    semantic = dataset.sample_semantic(idx)
    residual = dataset.sample_residual(idx, semantic)
    x = dataset.render(semantic, residual)["image"].to(device)
    was_training = model.training
    model.eval()
    out = {}
    try:
        with torch.no_grad():
            p = {t: v.softmax(1)[:, 1] for t, v in _preds(model, x).items() if t in tasks}
            for t in tasks:
                other = next(o for o in dataset.task_names if o != t)
                semantic_do = dataset.toggle(semantic, other)
                x_do = dataset.render(semantic_do, dataset.sample_residual(idx, semantic_do))["image"].to(
                    device
                )
                p_do = _preds(model, x_do)[t].softmax(1)[:, 1]
                out[t] = float((p[t] - p_do).abs().mean())
    finally:
        model.train(was_training)
    out["mean"] = sum(out[t] for t in tasks) / len(tasks)
    return out


# ------------------------------------------------------------------------- modules and the graph
def task_module_gradients(model: nn.Module, batch: dict, tasks: Sequence[str] | None = None) -> Tensor:
    """``(T, K)`` task-to-module gradients of an MT-CRL model on one batch (MT-CRL §4.1, appendix G).

    Entry (t, i) is the mean over samples of ``d f_t(Phi(x))[y] / d s_ti`` at ``s = 1``, where
    ``s_ti`` scales module i's contribution to task t (A_ti -> s_ti A_ti): how much module i pushes
    task t towards the right answer. Computed on the training and the validation split, their
    difference (valid - train) is negative for a module the task relies on in training but that
    helps less on the shifted split -- a spurious module. Needs ``model.experts`` and
    ``model.predict_from_modules`` (:class:`coremtl_lite.models.mtcrl_model.MTCRLModel`).
    """
    if not isinstance(model, ModularModel):
        raise TypeError(
            f"task_module_gradients needs an MT-CRL model (MTCRLModel), got {type(model).__name__}"
        )
    tasks = list(tasks or model.task_names)
    was_training = model.training
    model.eval()
    try:
        with torch.enable_grad():
            z = model.experts(batch["image"])
            scale = torch.ones(len(model.task_names), model.num_modules, requires_grad=True)
            preds, _, _ = model.predict_from_modules(z, scale)
            total = sum(true_class_output(preds[t], batch[t], t).mean() for t in tasks)
            (g,) = torch.autograd.grad(total, scale)
    finally:
        model.train(was_training)
    rows = [model.task_names.index(t) for t in tasks]
    return g[rows].detach()


def task_similarity(routing: Tensor) -> Tensor:
    """Task-similarity induced by the routing graph A (T, K): the cosine similarity of the tasks' rows,
    so two tasks that use the same modules are similar (MT-CRL appendix G, Fig. 10 and 17)."""
    if routing.dim() != 2:
        raise ValueError(f"routing A must be (T, K), got {tuple(routing.shape)}")
    a = routing / routing.norm(dim=1, keepdim=True).clamp_min(1e-12)
    return a @ a.T


def evaluate_spurious(
    model: nn.Module,
    batches: dict[str, dict],
    causal_masks: dict[str, Tensor],
    tasks: Sequence[str],
    score_split: str | None = None,
) -> dict[str, float]:
    """Accuracy on every split of ``batches`` (``acc_<split>``) and rho_spur on ``score_split``
    (default: the first split), the columns of MT-CRL Table 1."""
    out = {}
    for split, b in batches.items():
        out[f"acc_{split}"] = accuracy(model, b, tasks)["mean"]
    split = score_split or next(iter(batches))
    out["rho_spur"] = spurious_scores(model, batches[split], causal_masks, tasks)["mean"]
    return out
