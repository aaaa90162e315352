"""Random Loss Weighting (RLW): Lin, Ye, Xu, Shi & Zhang, TMLR 2022."""

from __future__ import annotations

import torch
from torch import Tensor

from coremtl_lite.methods.base import Weighting, register


@register("rlw")
class RandomLossWeighting(Weighting):
    """RLW (Lin et al. 2022, Algorithm 1 with the normal distribution, §3): fresh random weights
    ``w = softmax(z)``, ``z ~ N(0, I_T)``, at every step, so the weights sum to one.

    The draws come from a ``torch.Generator`` seeded at construction (``seed``); its state is saved
    in ``state_dict()`` (``_extra_state``), so a resumed run draws the same weights as an
    uninterrupted one. Like torchjd's ``scalarization.Random``, minus its use of the global RNG.
    """

    def __init__(self, task_names, seed: int = 0):
        super().__init__(task_names)
        self.seed = int(seed)
        self.generator = torch.Generator().manual_seed(self.seed)
        self._last = torch.full((self.num_tasks,), 1.0 / self.num_tasks)

    def draw(self) -> Tensor:
        """A new ``(T,)`` weight vector on the simplex."""
        z = torch.randn(self.num_tasks, generator=self.generator)
        self._last = torch.softmax(z, dim=0)  # Algorithm 1: lambda = softmax(z)
        return self._last

    def weights(self, losses: Tensor) -> Tensor:
        """The weights of the latest draw (drawing happens once per :meth:`backward`)."""
        return self._last.to(losses)

    def backward(self, losses, *, shared_params, features=None, extra_loss=None):
        vec = self._ordered(losses)
        w = self.draw().to(vec)
        total = (w * vec).sum()
        if extra_loss is not None:
            total = total + extra_loss
        total.backward()
        return self._weight_logs(w)

    def get_extra_state(self) -> dict:
        return {"generator": self.generator.get_state(), "last": self._last.clone()}

    def set_extra_state(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
        self._last = state["last"].clone()
