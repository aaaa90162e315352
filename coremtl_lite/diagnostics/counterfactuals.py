"""Counterfactual recombination (paper Fig. 2, §4.4.1): decode the semantics of one image with the
residual code of another.

For a batch of images, ``grid[i, j] = D(z_s(x_i), z_p(x_j))``: row ``i`` keeps image ``i``'s content
(layout, geometry), column ``j`` lends its appearance. The diagonal is the plain reconstruction. The
same recombination drives CORE-MTL's counterfactual feature augmentation (Eq. 12).

On ShadedScenes we also know the *true* counterfactual: ``scenes.render(s_i, r_j)`` renders scene
``i``'s semantic factors with scene ``j``'s residual factors (an intervention on the SCM). The
distance between the model's and the true counterfactual (L1 and a perceptual loss) measures how
well the two streams match the true factors -- something the paper's real datasets cannot show.

Note: ShadedScenes' per-surface residuals are indexed by object slot, so ``r_j`` colours scene
``i``'s k-th object with scene ``j``'s k-th object's albedo and texture; the lighting, exposure and
noise are global.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from coremtl_lite.diagnostics.streams import is_dual_stream, model_output

__all__ = ["counterfactual_errors", "counterfactual_grid", "default_perceptual", "plot_counterfactual_gallery",
           "plot_true_vs_model", "swap_gain", "true_counterfactual_grid"]


def _require_decoder(model: nn.Module) -> None:
    if not is_dual_stream(model):
        raise TypeError(f"{type(model).__name__} has no decode(z_s, z_p): counterfactuals need a dual-stream "
                        "model with a grounding decoder (model.dual_stream=true, model.grounding=hard|soft)")


def _recon(decoded) -> Tensor:
    if isinstance(decoded, dict):
        if "recon" not in decoded:
            raise KeyError(f"model.decode(...) must return a dict with 'recon'; got keys {sorted(decoded)}")
        return decoded["recon"]
    return decoded


@torch.no_grad()
def counterfactual_grid(model: nn.Module, images: Tensor, donors: Tensor | None = None) -> Tensor:
    """``(B, B', 3, H, W)`` grid with ``grid[i, j] = decode(z_s(images[i]), z_p(donors[j]))["recon"]``.

    ``donors`` defaults to ``images`` (then the diagonal is the reconstruction). Runs in eval mode
    and restores the model's mode.
    """
    _require_decoder(model)
    if images.dim() != 4:
        raise ValueError(f"counterfactual_grid expects (B, 3, H, W) images, got {tuple(images.shape)}")
    donors = images if donors is None else donors
    was_training = model.training
    model.eval()
    try:
        device = next(model.parameters()).device
        out = model_output(model, images.to(device))
        z_s = out["z_s"]
        z_p = out["z_p"] if donors is images else model_output(model, donors.to(device))["z_p"]
        b, bd = z_s.shape[0], z_p.shape[0]
        zs_rep = z_s.repeat_interleave(bd, dim=0)  # row-major: (i, j) -> i * bd + j
        zp_rep = z_p.repeat(b, 1)
        rec = _recon(model.decode(zs_rep, zp_rep)).float().cpu()
    finally:
        model.train(was_training)
    return rec.view(b, bd, *rec.shape[1:])


def true_counterfactual_grid(scenes, indices: Sequence[int], donor_indices: Sequence[int] | None = None) -> Tensor:
    """``(B, B', 3, H, W)`` with ``grid[i, j] = scenes.render(s_i, r_j)["image"]`` (the SCM's intervention)."""
    indices = [int(i) for i in indices]
    donor_indices = indices if donor_indices is None else [int(i) for i in donor_indices]
    sem = scenes.sample_semantic(indices)
    res = scenes.sample_residual(donor_indices)
    b, bd = len(indices), len(donor_indices)
    sem_rep = {k: v.repeat_interleave(bd, dim=0) for k, v in sem.items()}
    res_rep = {k: v.repeat(b, *([1] * (v.dim() - 1))) for k, v in res.items()}
    img = scenes.render(sem_rep, res_rep)["image"].float()
    return img.view(b, bd, *img.shape[1:])


def default_perceptual() -> tuple[str, Callable[[Tensor, Tensor], Tensor]] | None:
    """The package's perceptual loss if :mod:`coremtl_lite.losses` provides one, else 1 - SSIM.

    Returns ``(name, fn)`` with ``fn(a, b) -> (N,)`` per-image distances of ``(N, 3, H, W)`` images in
    [0, 1], or ``None`` when neither is available.
    """
    try:
        from coremtl_lite.losses import build_perceptual  # type: ignore[attr-defined]

        loss = build_perceptual("auto")
        if loss is not None:
            name = getattr(loss, "name", type(loss).__name__)

            def fn(a: Tensor, b: Tensor) -> Tensor:
                with torch.no_grad():
                    return torch.stack([loss(a[i:i + 1], b[i:i + 1]).reshape(()) for i in range(a.shape[0])])

            return str(name), fn
    except (ImportError, AttributeError, TypeError):
        pass
    try:
        from pytorch_msssim import ssim
    except ImportError:
        return None

    def ssim_distance(a: Tensor, b: Tensor) -> Tensor:
        win = 7 if min(a.shape[-2:]) >= 7 else 3
        return 1.0 - ssim(a.float(), b.float(), data_range=1.0, size_average=False, win_size=win)

    return "1-SSIM", ssim_distance


def counterfactual_errors(model_grid: Tensor, true_grid: Tensor,
                          perceptual: tuple[str, Callable] | None | bool = True) -> dict:
    """L1 and perceptual distance between the model's and the true counterfactuals.

    Returns ``{"l1": mean, "l1_matrix": (B, B'), "l1_diagonal": mean over reconstructions,
    "l1_offdiagonal": mean over true swaps}`` and, when a perceptual loss is available (``True``:
    :func:`default_perceptual`), the same four keys with its name as prefix (e.g. ``lpips``).
    """
    if model_grid.shape != true_grid.shape:
        raise ValueError(f"grid shapes differ: model {tuple(model_grid.shape)} vs true {tuple(true_grid.shape)}")
    b, bd = model_grid.shape[:2]
    flat_m, flat_t = model_grid.reshape(b * bd, *model_grid.shape[2:]), true_grid.reshape(b * bd, *true_grid.shape[2:])
    mats = {"l1": (flat_m - flat_t).abs().flatten(1).mean(1).view(b, bd)}
    if perceptual is True:
        perceptual = default_perceptual()
    if perceptual:
        name, fn = perceptual
        mats[name.lower()] = fn(flat_m, flat_t).detach().float().cpu().view(b, bd)
    out: dict = {}
    eye = torch.eye(b, bd, dtype=torch.bool)
    for name, mat in mats.items():
        out[name] = float(mat.mean())
        out[f"{name}_matrix"] = mat
        out[f"{name}_diagonal"] = float(mat[eye].mean()) if eye.any() else float("nan")
        out[f"{name}_offdiagonal"] = float(mat[~eye].mean()) if (~eye).any() else float("nan")
    return out


def swap_gain(model_grid: Tensor, true_grid: Tensor) -> dict[str, float]:
    """Does swapping z_p move the decoded image towards the true counterfactual?

    For ``i ≠ j`` compares ``L1(D(z_s_i, z_p_j), render(s_i, r_j))`` (with the swap) to
    ``L1(D(z_s_i, z_p_i), render(s_i, r_j))`` (ignoring the donor: the plain reconstruction). Returns
    both means and their ratio; a ratio well below 1 means the residual code carries the appearance
    the donor lends. Needs square grids (the donors are the contents).
    """
    b, bd = model_grid.shape[:2]
    if b != bd or true_grid.shape != model_grid.shape:
        raise ValueError(f"swap_gain needs square grids of equal shape, got {tuple(model_grid.shape)} and "
                         f"{tuple(true_grid.shape)}")
    if b < 2:
        raise ValueError("swap_gain needs at least 2 images")
    off = ~torch.eye(b, dtype=torch.bool)
    err = (model_grid - true_grid).abs().flatten(2).mean(2)  # (B, B)
    own = model_grid[torch.arange(b), torch.arange(b)]  # D(z_s_i, z_p_i)
    err_own = (own[:, None] - true_grid).abs().flatten(2).mean(2)
    with_swap, without = float(err[off].mean()), float(err_own[off].mean())
    return {"l1_with_swap": with_swap, "l1_without_swap": without, "ratio": with_swap / max(without, 1e-12)}


def plot_counterfactual_gallery(grid: Tensor, contents: Tensor | None = None, donors: Tensor | None = None,
                                title: str = "Counterfactuals: content (rows) x residual donor (columns)",
                                panel_size: int = 110):
    """A plotly gallery of a counterfactual grid; the first row/column show the donors/contents."""
    from coremtl_lite.viz import image_grid

    b, bd = grid.shape[:2]
    panels, titles = [], []
    blank = torch.ones(3, *grid.shape[-2:])
    if donors is not None:
        panels.append(blank)
        titles.append("")
        for j in range(bd):
            panels.append(donors[j])
            titles.append(f"donor {j}")
    for i in range(b):
        if contents is not None:
            panels.append(contents[i])
            titles.append(f"content {i}")
        for j in range(bd):
            panels.append(grid[i, j])
            titles.append("recon" if i == j else f"s{i} + r{j}")
    cols = bd + (1 if contents is not None else 0)
    if donors is not None and contents is None:
        panels, titles = panels[1:], titles[1:]
    return image_grid(panels, titles, cols=cols, title=title, panel_size=panel_size)


def plot_true_vs_model(model_grid: Tensor, true_grid: Tensor, pairs: Sequence[tuple[int, int]],
                       errors: dict | None = None, panel_size: int = 120):
    """For each ``(i, j)``: the true counterfactual ``render(s_i, r_j)``, the model's, and |difference|."""
    from coremtl_lite.viz import image_grid

    panels, titles = [], []
    for i, j in pairs:
        diff = (model_grid[i, j] - true_grid[i, j]).abs().mean(0, keepdim=True).expand(3, -1, -1)
        diff = diff / diff.max().clamp_min(1e-6)
        l1 = float((model_grid[i, j] - true_grid[i, j]).abs().mean())
        panels += [true_grid[i, j], model_grid[i, j], diff]
        titles += [f"true render(s{i}, r{j})", f"model D(z_s{i}, z_p{j})", f"|diff| (L1 {l1:.3f})"]
    title = "True vs model counterfactuals"
    if errors:
        title += f" -- mean L1 {errors['l1']:.3f}"
    return image_grid(panels, titles, cols=3, title=title, panel_size=panel_size)
