"""The MT-CRL model (Hu et al. 2022, §3.1): K modules, a task-to-module routing graph, per-task predictors.

    Z_i = Phi_i(x)  (i = 1..K),   A = sigmoid(theta) in [0, 1]^{T x K},   y_t = f_t(sum_i A_ti Z_i)

The modules are MMoE experts (Ma et al. 2018); MT-CRL replaces MMoE's per-task softmax gates by
the input-independent graph A, so that a task may use several modules and a module can be switched
off for a task (its causal graph). The routing logits theta carry the flag ``ROUTING_FLAG`` so that
the MT-CRL method (``coremtl_lite.methods.mtcrl``) finds them among the parameters it is given.

Two choices of this package keep the model trainable with the paper's regulariser weights:

* **Module outputs at unit scale by design.** The layers are initialised to keep the scale of their
  input (He initialisation), and each module's output goes through a batch normalisation
  without learnt scale or shift (``nn.BatchNorm1d(affine=False)``, running statistics at eval time):
  every output dimension has zero mean and unit variance over the batch. The decorrelation loss reads
  Pearson correlations, which are invariant to a per-dimension affine map, so this changes nothing
  L_decor measures -- but its gradient scales as 1/std of the outputs and the G-IRM penalty (gradients
  with respect to A, which scale with Z) as std^2. Unnormalised, a small CNN's outputs shrink layer by
  layer (batch std ~0.01 here), making the decorrelation gradient ~10^5 times the task gradient and the
  G-IRM penalty ~10^-5: the weights lambda_decor, lambda_G-IRM would not mean what they mean in the paper.
* **A routing graph that can move.** ``theta`` is stored as ``theta = routing_scale * phi`` with the
  parameter phi (``routing_logits``). Adam moves a parameter by about ``lr`` per step whatever its
  gradient's size, so this gives theta its own learning rate ``routing_scale * lr`` without a separate
  optimiser group (under plain SGD the factor would be ``routing_scale^2``). With lr = 3e-3 and a few
  hundred steps, theta itself could move by at most ~1 (A stays in [0.27, 0.73]: no module can ever be
  switched off); with the default ``routing_scale = 10`` it can reach |theta| ~ 5 (A < 0.01).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from coremtl_lite.models.blocks import channels_first

#: attribute set to True on the routing parameter phi (theta = routing_scale * phi); the MT-CRL method looks for it
ROUTING_FLAG = "is_task_routing"
#: attribute holding ``routing_scale`` on that parameter
ROUTING_SCALE = "routing_scale"


def routing_of(param: Tensor) -> Tensor:
    """A = sigmoid(theta) with theta = routing_scale * phi, for the flagged routing parameter phi (MT-CRL §3.1)."""
    return torch.sigmoid(getattr(param, ROUTING_SCALE, 1.0) * param)


class ModuleNorm(nn.Module):
    """Per-dimension batch normalisation of the stacked module outputs (B, K, D), no learnt affine map.

    Training mode: zero mean, unit variance over the batch (a batch of one sample uses the running
    statistics instead); eval mode: the running statistics. See the module docstring for why.
    """

    def __init__(self, num_modules: int, module_dim: int):
        super().__init__()
        self.norm = nn.BatchNorm1d(num_modules * module_dim, affine=False)

    def forward(self, z: Tensor) -> Tensor:
        b, k, d = z.shape
        flat = z.reshape(b, k * d)
        if self.training and b > 1:
            out = self.norm(flat)
        else:
            out = F.batch_norm(
                flat, self.norm.running_mean, self.norm.running_var, training=False, eps=self.norm.eps
            )
        return out.view(b, k, d)


class GroupedLinear(nn.Module):
    """K independent linear maps applied at once: (B, K, D_in) -> (B, K, D_out).

    Initialised to keep the scale of its input: weights uniform with variance ``gain^2 / D_in``
    (He et al. 2015; ``gain = sqrt(2)`` after a ReLU), zero biases.
    """

    def __init__(
        self, groups: int, d_in: int, d_out: int, generator: torch.Generator | None = None, gain: float = 1.0
    ):
        super().__init__()
        bound = gain * (3.0 / d_in) ** 0.5
        self.weight = nn.Parameter((torch.rand(groups, d_in, d_out, generator=generator) * 2 - 1) * bound)
        self.bias = nn.Parameter(torch.zeros(groups, d_out))

    def forward(self, x: Tensor) -> Tensor:
        return torch.einsum("bki,kio->bko", x, self.weight) + self.bias


class MLPExperts(nn.Module):
    """K independent MLP modules on a vector input (MultiSEM): (B, D_in) -> (B, K, D), unit-scale outputs
    (:class:`ModuleNorm`; ``normalize=False`` returns the raw outputs)."""

    def __init__(
        self,
        d_in: int,
        num_modules: int,
        module_dim: int,
        hidden: int = 32,
        seed: int = 0,
        normalize: bool = True,
    ):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.num_modules = num_modules
        self.first = GroupedLinear(num_modules, d_in, hidden, g)
        self.second = GroupedLinear(num_modules, hidden, module_dim, g, gain=2.0**0.5)
        self.norm = ModuleNorm(num_modules, module_dim) if normalize else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 2:
            raise ValueError(f"MLPExperts expects a (B, D) input vector, got {tuple(x.shape)}")
        h = torch.relu(self.first(x[:, None].expand(-1, self.num_modules, -1)))
        return self.norm(self.second(h))


class ConvExperts(nn.Module):
    """K independent small CNN modules on an image, run as grouped convolutions: (B, 3, H, W) -> (B, K, D).

    Each module: conv3x3(stride 2) -> ReLU -> conv3x3(stride 2) -> ReLU -> average pool to a
    ``grid`` (rows, cols) -> linear -> :class:`ModuleNorm` (unit-scale outputs; ``normalize=False``
    skips it). The coarse grid keeps *where* things are (the left or right digit of DigitPairs), which
    a global pool would erase.
    """

    def __init__(
        self,
        in_channels: int,
        num_modules: int,
        module_dim: int,
        width: int = 8,
        seed: int = 0,
        grid: tuple[int, int] = (2, 4),
        normalize: bool = True,
    ):
        super().__init__()
        torch.manual_seed(seed)  # nn.Conv2d's own init; the seed makes it reproducible
        k = num_modules
        self.num_modules, self.grid = k, (int(grid[0]), int(grid[1]))
        self.conv1 = nn.Conv2d(in_channels, k * width, 3, stride=2, padding=1)
        self.conv2 = nn.Conv2d(k * width, k * width, 3, stride=2, padding=1, groups=k)
        for conv in (self.conv1, self.conv2):  # He initialisation: the scale survives both layers
            nn.init.kaiming_normal_(conv.weight, a=0.1, nonlinearity="leaky_relu")
            if conv.bias is not None:  # always (bias=True); the check is for the type checker
                nn.init.zeros_(conv.bias)
        self.proj = GroupedLinear(
            k,
            width * self.grid[0] * self.grid[1],
            module_dim,
            torch.Generator().manual_seed(seed),
            gain=2.0**0.5,
        )
        self.norm = ModuleNorm(k, module_dim) if normalize else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 4:
            raise ValueError(f"ConvExperts expects a (B, C, H, W) image, got {tuple(x.shape)}")
        h = F.leaky_relu(self.conv2(F.leaky_relu(self.conv1(x), 0.1)), 0.1)
        h = channels_first(F.adaptive_avg_pool2d(h, self.grid)).reshape(x.shape[0], self.num_modules, -1)
        return self.norm(self.proj(h))


class MTCRLModel(nn.Module):
    """K modules + routing graph A = sigmoid(theta) + per-task predictors (MT-CRL §3.1, Algorithm 1 line 5).

    Args:
        experts: a module mapping the input to the stacked module outputs (B, K, D).
        task_channels: ``{task: output channels}`` (number of classes, or 1 for a regression).
        num_modules, module_dim: K and D.
        hidden: width of each per-task predictor f_t (one hidden layer; 0 = linear).
        init_logit: initial theta (sigmoid(0) = 0.5, every module half-on for every task).
        routing_scale: theta = routing_scale * phi for the parameter phi (``theta`` below), the routing
            graph's own learning rate under Adam (module docstring).

    ``forward(x)`` returns ``preds`` ``{task: (B, C_t)}``, ``features`` = ``experts`` = the module
    outputs (B, K, D) (what MT-CRL's decorrelation loss reads), ``routing`` A (T, K) and ``mixed``
    ``{task: sum_i A_ti Z_i}``. ``shared_parameters()`` = the modules and the routing parameter.
    The parameter ``self.theta`` is phi; the paper's theta is ``routing_scale * self.theta``.
    """

    dual_stream = False  # no z_s / z_p streams (protocols.MultiTaskModel)

    def __init__(
        self,
        experts: nn.Module,
        task_channels: dict[str, int],
        num_modules: int,
        module_dim: int,
        hidden: int = 32,
        init_logit: float = 0.0,
        seed: int = 0,
        routing_scale: float = 10.0,
    ):
        super().__init__()
        if not task_channels:
            raise ValueError("MTCRLModel needs at least one task")
        if not routing_scale > 0:
            raise ValueError(f"MTCRLModel: routing_scale must be > 0, got {routing_scale}")
        self.task_names = list(task_channels)
        self.num_modules, self.module_dim = int(num_modules), int(module_dim)
        self.routing_scale = float(routing_scale)
        self.experts = experts
        self.theta = nn.Parameter(
            torch.full((len(self.task_names), self.num_modules), float(init_logit) / self.routing_scale)
        )
        setattr(self.theta, ROUTING_FLAG, True)
        setattr(self.theta, ROUTING_SCALE, self.routing_scale)
        torch.manual_seed(seed)
        self.heads = nn.ModuleDict(
            {
                t: (
                    nn.Sequential(nn.Linear(module_dim, hidden), nn.ReLU(), nn.Linear(hidden, c))
                    if hidden
                    else nn.Linear(module_dim, c)
                )
                for t, c in task_channels.items()
            }
        )

    def routing(self) -> Tensor:
        """A = sigmoid(routing_scale * phi), (T, K) (MT-CRL §3.1)."""
        return routing_of(self.theta)

    def shared_parameters(self) -> list[nn.Parameter]:
        """The modules Phi and the routing logits theta (everything but the per-task predictors)."""
        return [*self.experts.parameters(), self.theta]

    def predict_from_modules(
        self, z: Tensor, module_scale: Tensor | None = None
    ) -> tuple[dict, Tensor, Tensor]:
        """``(preds, A, mixed)`` from module outputs ``z`` (B, K, D); ``module_scale`` (T, K) multiplies A
        (a probe for task-to-module gradients, MT-CRL §4.1 case study; ``None`` = ones)."""
        if z.dim() != 3 or z.shape[1] != self.num_modules:
            raise ValueError(f"experts must return (B, K={self.num_modules}, D), got {tuple(z.shape)}")
        a = self.routing()
        weights = a if module_scale is None else a * module_scale
        mixed = torch.einsum("tk,bkd->tbd", weights, z)  # sum_i A_ti Phi_i(x), Algorithm 1 line 5
        preds = {t: self.heads[t](mixed[i]) for i, t in enumerate(self.task_names)}
        return preds, a, mixed

    def forward(self, x: Tensor) -> dict:
        z = self.experts(x)
        preds, a, mixed = self.predict_from_modules(z)
        return {
            "preds": preds,
            "features": z,
            "experts": z,
            "routing": a,
            "mixed": {t: mixed[i] for i, t in enumerate(self.task_names)},
        }


def build_mtcrl_model(
    input_shape: Sequence[int],
    task_channels: dict[str, int],
    num_modules: int = 8,
    module_dim: int = 16,
    width: int = 8,
    hidden: int = 32,
    seed: int = 0,
    normalize: bool = True,
    routing_scale: float = 10.0,
) -> MTCRLModel:
    """An :class:`MTCRLModel` with MLP modules for a vector input ``(D,)`` or CNN modules for ``(C, H, W)``.

    K = 8 modules of D = 16 dimensions by default: the paper's d = K x D = 128 (MT-CRL appendix F fixes
    d and gives each module d/K; a shared-bottom model is K = 1, D = 128).
    """
    shape = tuple(int(s) for s in input_shape)
    experts: nn.Module
    if len(shape) == 1:
        experts = MLPExperts(
            shape[0], num_modules, module_dim, hidden=max(width, 8) * 4, seed=seed, normalize=normalize
        )
    elif len(shape) == 3:
        experts = ConvExperts(shape[0], num_modules, module_dim, width=width, seed=seed, normalize=normalize)
    else:
        raise ValueError(f"build_mtcrl_model: input_shape must be (D,) or (C, H, W), got {shape}")
    return MTCRLModel(
        experts, task_channels, num_modules, module_dim, hidden=hidden, seed=seed, routing_scale=routing_scale
    )
