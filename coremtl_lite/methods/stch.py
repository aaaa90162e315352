"""Smooth Tchebycheff scalarisation (STCH): Lin, Zhang, Zhang, Chen, Zhang & Zhang, ICML 2024."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from coremtl_lite.methods._util import epoch_means
from coremtl_lite.methods.base import Weighting, register


@register("stch")
class SmoothTchebycheff(Weighting):
    """STCH (Lin et al. 2024, STCH Eq. 6): ``g_mu(f) = mu log sum_i exp(lambda_i (f_i - z*_i) / mu)``.

    A smooth version of the Tchebycheff scalarisation ``max_i lambda_i (f_i - z*_i)`` (STCH Eq. 4); the
    gap to it is at most ``mu log T`` (Prop. 3.3). ``lambda`` is the preference on the simplex
    (``preference``, default uniform ``1/T``), ``z*`` the ideal point (``ideal``, default none, i.e.
    0), ``mu`` the smoothing temperature. Computed with the max subtracted before ``exp`` (the
    paper's App. B.1 trick). With the defaults this equals torchjd's ``scalarization.STCH(mu)``
    (tested).

    ``normalize="log_nadir"`` adds the recipe of the authors' multi-task code (as in LibMTL's
    STCH): for the first ``warmup_epochs`` epochs minimise ``sum_t log L_t``; the mean losses of the
    last warm-up epoch (from :meth:`on_epoch_end`) become the nadir point ``n``; afterwards the
    objectives are ``f_t = log(L_t / n_t)``, which makes tasks of different scales comparable.
    (That code also uses ``lambda_i = 1`` and multiplies by T; pass ``preference=[1]*T`` to get the
    same direction, the factor T being a learning-rate scale.)
    """

    # registered buffers (typed here; nn.Module would type them Tensor | Module)
    preference: Tensor
    ideal: Tensor
    nadir: Tensor
    epoch: Tensor

    def __init__(
        self,
        task_names,
        mu: float = 0.1,
        preference: Sequence[float] | None = None,
        ideal: Sequence[float] | None = None,
        normalize: str = "none",
        warmup_epochs: int = 1,
    ):
        super().__init__(task_names)
        if mu <= 0:
            raise ValueError(f"stch: mu must be > 0, got {mu}")
        if normalize not in ("none", "log_nadir"):
            raise ValueError(f"stch: normalize must be 'none' or 'log_nadir', got {normalize!r}")
        self.mu = float(mu)
        self.normalize = normalize
        self.warmup_epochs = int(warmup_epochs) if normalize == "log_nadir" else 0
        pref = (
            torch.full((self.num_tasks,), 1.0 / self.num_tasks)
            if preference is None
            else torch.as_tensor(preference, dtype=torch.float32)
        )
        z = torch.zeros(self.num_tasks) if ideal is None else torch.as_tensor(ideal, dtype=torch.float32)
        for name, v in (("preference", pref), ("ideal", z)):
            if v.shape != (self.num_tasks,):
                raise ValueError(f"stch: {name} needs {self.num_tasks} entries, got shape {tuple(v.shape)}")
        self.register_buffer("preference", pref)
        self.register_buffer("ideal", z)
        self.register_buffer("nadir", torch.ones(self.num_tasks))
        self.register_buffer("epoch", torch.zeros((), dtype=torch.long))

    @property
    def warming_up(self) -> bool:
        return int(self.epoch) < self.warmup_epochs

    def on_epoch_end(self, stats: dict[str, float]) -> None:
        """Count epochs; at the end of the last warm-up epoch store its mean losses as the nadir."""
        if self.normalize == "log_nadir" and int(self.epoch) == self.warmup_epochs - 1:
            self.nadir.copy_(torch.tensor(epoch_means(stats, self.task_names, "stch")))
        self.epoch += 1

    def _objectives(self, losses: Tensor) -> Tensor:
        if self.normalize == "log_nadir":
            return torch.log(losses / self.nadir.to(losses) + 1e-20)
        return losses

    def combine(self, losses: Tensor) -> Tensor:
        if self.warming_up:
            return torch.log(losses + 1e-20).sum()
        y = self.preference.to(losses) * (self._objectives(losses) - self.ideal.to(losses))
        y_max = y.max().detach()
        return self.mu * torch.logsumexp((y - y_max) / self.mu, dim=0) + y_max  # STCH Eq. 6 (App. B.1)

    def weights(self, losses: Tensor) -> Tensor:
        """``d combine / d L_t``: the effective weight each task loss gets this step."""
        with torch.enable_grad():
            x = losses.detach().clone().requires_grad_(True)
            (grad,) = torch.autograd.grad(self.combine(x), x)
        return grad
