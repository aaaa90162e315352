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

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from coremtl_lite.diagnostics.streams import is_dual_stream, model_output

__all__ = [
    "counterfactual_errors",
    "counterfactual_grid",
    "default_perceptual",
    "grounding_scores",
    "psnr",
    "swap_gain",
    "true_counterfactual_grid",
]


def _require_decoder(model: nn.Module) -> None:
    if not is_dual_stream(model):
        raise TypeError(
            f"{type(model).__name__} has no decode(z_s, z_p): counterfactuals need a dual-stream "
            "model with a grounding decoder (model.architecture=dual_stream, model.grounding=hard|soft)"
        )


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


def true_counterfactual_grid(
    scenes, indices: Sequence[int], donor_indices: Sequence[int] | None = None
) -> Tensor:
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


def default_perceptual(kind: str | None = None) -> tuple[str, Callable[[Tensor, Tensor], Tensor]] | None:
    """The perceptual distance the training uses (``loss.perceptual`` of the active profile, or ``kind``:
    auto | lpips | ssim), else 1 - SSIM.

    Returns ``(name, fn)`` with ``fn(a, b) -> (N,)`` per-image distances of ``(N, 3, H, W)`` images in
    [0, 1], or ``None`` when neither is available.
    """
    try:
        from coremtl_lite.config import get_config
        from coremtl_lite.losses import build_perceptual

        loss = build_perceptual(kind or get_config().loss.perceptual)
        if loss is not None:
            name = getattr(loss, "name", type(loss).__name__)

            def fn(a: Tensor, b: Tensor) -> Tensor:
                with torch.no_grad():
                    return torch.stack(
                        [loss(a[i : i + 1], b[i : i + 1]).reshape(()) for i in range(a.shape[0])]
                    )

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


def counterfactual_errors(
    model_grid: Tensor, true_grid: Tensor, perceptual: tuple[str, Callable] | None | bool = True
) -> dict:
    """L1 and perceptual distance between the model's and the true counterfactuals.

    Returns ``{"l1": mean, "l1_matrix": (B, B'), "l1_diagonal": mean over reconstructions,
    "l1_offdiagonal": mean over true swaps}`` and, when a perceptual loss is available (``True``:
    :func:`default_perceptual`), the same four keys with its name as prefix (e.g. ``lpips``).
    """
    if model_grid.shape != true_grid.shape:
        raise ValueError(
            f"grid shapes differ: model {tuple(model_grid.shape)} vs true {tuple(true_grid.shape)}"
        )
    b, bd = model_grid.shape[:2]
    flat_m, flat_t = (
        model_grid.reshape(b * bd, *model_grid.shape[2:]),
        true_grid.reshape(b * bd, *true_grid.shape[2:]),
    )
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
        raise ValueError(
            f"swap_gain needs square grids of equal shape, got {tuple(model_grid.shape)} and "
            f"{tuple(true_grid.shape)}"
        )
    if b < 2:
        raise ValueError("swap_gain needs at least 2 images")
    off = ~torch.eye(b, dtype=torch.bool)
    err = (model_grid - true_grid).abs().flatten(2).mean(2)  # (B, B)
    own = model_grid[torch.arange(b), torch.arange(b)]  # D(z_s_i, z_p_i)
    err_own = (own[:, None] - true_grid).abs().flatten(2).mean(2)
    with_swap, without = float(err[off].mean()), float(err_own[off].mean())
    return {"l1_with_swap": with_swap, "l1_without_swap": without, "ratio": with_swap / max(without, 1e-12)}


def psnr(a: Tensor, b: Tensor) -> float:
    """Peak signal-to-noise ratio in dB of two image batches in [0, 1]: 10 log10(1 / MSE)."""
    mse = float((a.float() - b.float()).pow(2).mean())
    return float("inf") if mse == 0 else 10.0 * math.log10(1.0 / mse)


@torch.no_grad()
def grounding_scores(
    model: nn.Module, scenes, indices: Sequence[int], mean_image: Tensor
) -> dict[str, float]:
    """How well the grounding decoder reconstructs, and whether its counterfactuals are what they claim.

    For the scenes ``indices`` of a ShadedScenes split, with donor ``j`` = the next index (cyclically):

    * ``psnr_recon`` -- PSNR of D(z_s(x), z_p(x)) against x, next to the two trivial reconstructions
      ``psnr_mean_image`` (the training set's mean image, ``mean_image`` (3, H, W)) and ``psnr_own_mean``
      (each image's own mean colour);
    * ``psnr_cf_true`` -- PSNR of the counterfactual D(z_s(x_i), z_p(x_j)) against the true counterfactual
      render(s_i, r_j), and ``psnr_recon_true`` -- the plain reconstruction of x_i against the same truth;
      ``cf_gain_db`` = their difference (> 0: the donor's code moves the image towards the truth);
    * layout -- the model's own segmentation of the counterfactual scored (mIoU) against x_i's labels,
      ``cf_miou_content``, next to ``recon_miou_content`` (of the plain reconstruction) and
      ``cf_miou_donor`` (against the donor's labels: should be far lower);
    * appearance -- the distance of the counterfactual's mean colour to that of the true counterfactual,
      ``cf_colour_err``, next to the plain reconstruction's ``recon_colour_err``.
    """
    from coremtl_lite.metrics import SegmentationMeter

    _require_decoder(model)
    idx = [int(i) for i in indices]
    if len(idx) < 2:
        raise ValueError("grounding_scores needs at least 2 scenes (each lends its residual to the next)")
    donors = idx[1:] + idx[:1]
    was_training = model.training
    model.eval()
    try:
        device = next(model.parameters()).device
        batch, donor_batch = scenes.get_batch(idx), scenes.get_batch(donors)
        x, size = (
            batch["image"].to(device),
            tuple(batch["image"].shape[-2:]),
        )  # decode's default size: the input's
        out, donor_out = model_output(model, x), model_output(model, donor_batch["image"].to(device))
        recon = _recon(model.decode(out["z_s"], out["z_p"])).float().clamp(0, 1)
        cf = _recon(model.decode(out["z_s"], donor_out["z_p"])).float().clamp(0, 1)
        if tuple(recon.shape[-2:]) != size:
            raise ValueError(
                f"grounding_scores: the decoder returns {tuple(recon.shape[-2:])} images for {size} inputs"
            )
        truth = scenes.render(scenes.sample_semantic(idx), scenes.sample_residual(donors))["image"].to(device)
        x = x.float()
        k = scenes.task_info["segmentation"]["num_classes"]

        def miou(images: Tensor, labels: Tensor) -> float:
            meter = SegmentationMeter(k)
            meter.update(model_output(model, images)["preds"]["segmentation"].float(), labels.to(device))
            return meter.compute()["mIoU"]

        own_mean = x.mean(dim=(2, 3), keepdim=True).expand_as(x)
        colour = lambda a: a.mean(dim=(2, 3))  # noqa: E731 - (B, 3) mean colour
        scores = {
            "psnr_recon": psnr(recon, x),
            "psnr_mean_image": psnr(mean_image.to(device).float().expand_as(x), x),
            "psnr_own_mean": psnr(own_mean, x),
            "psnr_cf_true": psnr(cf, truth),
            "psnr_recon_true": psnr(recon, truth),
            "cf_miou_content": miou(cf, batch["segmentation"]),
            "recon_miou_content": miou(recon, batch["segmentation"]),
            "cf_miou_donor": miou(cf, donor_batch["segmentation"]),
            "cf_colour_err": float((colour(cf) - colour(truth)).abs().mean()),
            "recon_colour_err": float((colour(recon) - colour(truth)).abs().mean()),
        }
        scores["cf_gain_db"] = scores["psnr_cf_true"] - scores["psnr_recon_true"]
    finally:
        model.train(was_training)
    return scores
