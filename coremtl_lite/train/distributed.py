"""Data parallelism under ``torchrun``: one process per device, gradients averaged by hand.

The loop does not wrap the model in ``DistributedDataParallel``: the objective calls model methods
(``decode``, ``shared_parameters``) that a DDP wrapper hides, and gradient methods compute their
Jacobians and aggregations *per rank* inside ``method.backward``. So every rank runs the method on
its slice of the global batch, then :func:`all_reduce_gradients` averages all gradients in one
flattened all-reduce -- the same arithmetic as DDP, one path for every method. For a linear method
(EW and every weighting) this equals the single-process gradient of the global batch; for a
non-linear aggregator (MGDA, PCGrad, ...) it is the mean of the per-rank aggregated directions.

BatchNorm: with more than one process, BatchNorm layers become :class:`DistBatchNorm`, which
normalises with the statistics of the *global* batch (sums all-reduced with autograd), so training
matches a single process. ``torch.nn.SyncBatchNorm`` does the same but only on GPUs; this class
also runs on CPU with gloo.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor, nn


@dataclass(frozen=True)
class DistContext:
    """Rank, world size and local rank of this process (a single process: 0, 1, 0)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def context_from_env() -> DistContext:
    """Read ``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` as set by ``torchrun`` (absent: one process)."""
    try:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", str(rank)))
    except ValueError as err:
        raise RuntimeError(
            f"bad torchrun environment: RANK/WORLD_SIZE/LOCAL_RANK must be integers ({err})"
        ) from err
    if world < 1 or not 0 <= rank < world:
        raise RuntimeError(f"bad torchrun environment: RANK={rank}, WORLD_SIZE={world}")
    return DistContext(rank, world, local)


def init_distributed(device_type: str) -> DistContext:
    """Join the process group when ``WORLD_SIZE > 1``: nccl on CUDA, gloo otherwise (env:// rendezvous)."""
    ctx = context_from_env()
    if ctx.enabled and not dist.is_initialized():
        backend = "nccl" if device_type == "cuda" else "gloo"
        if device_type == "cuda":
            torch.cuda.set_device(ctx.local_rank)
        dist.init_process_group(
            backend=backend, init_method="env://", rank=ctx.rank, world_size=ctx.world_size
        )
    if ctx.enabled and dist.get_world_size() != ctx.world_size:
        raise RuntimeError(f"process group has {dist.get_world_size()} ranks but WORLD_SIZE={ctx.world_size}")
    return ctx


def broadcast_module(module: nn.Module, src: int = 0) -> None:
    """Copy parameters and buffers of rank ``src`` to every rank (identical starting points)."""
    if not (dist.is_available() and dist.is_initialized()):
        return
    with torch.no_grad():
        for t in [*module.parameters(), *module.buffers()]:
            dist.broadcast(t.data, src)


def all_reduce_gradients(params: Sequence[Tensor]) -> None:
    """Average ``.grad`` over ranks in one flattened all-reduce.

    A parameter whose gradient is ``None`` on every rank stays ``None`` (the optimiser skips it, as
    in a single process); one that has a gradient on some rank gets zeros elsewhere first.
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return
    world = dist.get_world_size()
    device = params[0].device if params else torch.device("cpu")
    has = torch.tensor([p.grad is not None for p in params], dtype=torch.int32, device=device)
    dist.all_reduce(has)
    live = [p for p, h in zip(params, has.tolist()) if h > 0]
    if not live:
        return
    for p in live:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    flat = torch.cat([p.grad.reshape(-1).float() for p in live])
    dist.all_reduce(flat)
    flat /= world
    start = 0
    for p in live:
        n = p.numel()
        p.grad.copy_(flat[start : start + n].view_as(p.grad))
        start += n


def average_float_buffers(module: nn.Module) -> None:
    """Average every floating-point buffer of ``module`` over ranks (e.g. a method's task weights that
    a per-rank meta step updated), so method state stays identical on every rank."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return
    bufs = [b for b in module.buffers() if b.is_floating_point()]
    if not bufs:
        return
    flat = torch.cat([b.detach().reshape(-1).double() for b in bufs])
    dist.all_reduce(flat)
    flat /= dist.get_world_size()
    start = 0
    with torch.no_grad():
        for b in bufs:
            b.copy_(flat[start : start + b.numel()].view_as(b))
            start += b.numel()


def all_reduce_sum(t: Tensor) -> Tensor:
    """Sum ``t`` over ranks in place (no-op in a single process); returns ``t``."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(t)
    return t


class _AllReduceSum(torch.autograd.Function):
    """``y = sum over ranks of x``; backward: the incoming gradients summed over ranks (every rank's
    loss depends on y), which after the trainer's gradient averaging gives the global-batch gradient."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        y = x.clone()
        dist.all_reduce(y)
        return y

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad


class DistBatchNorm(nn.BatchNorm2d):
    """BatchNorm over the global batch of all ranks (any input ``(B, C, ...)``); CPU (gloo) or GPU.

    In training mode the per-channel sum, sum of squares and count are all-reduced with autograd
    (an all-reduce with a backward), so both the normalisation and its gradient are
    those of the concatenated batch; running statistics get the unbiased global variance. In eval
    mode (or without a process group) it is an ordinary BatchNorm.
    """

    def _check_input_dim(self, input: Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"DistBatchNorm expects (B, C, ...) input, got {tuple(input.shape)}")

    def forward(self, input: Tensor) -> Tensor:
        self._check_input_dim(input)
        if not (
            self.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
        ):
            return nn.functional.batch_norm(
                input,
                self.running_mean,
                self.running_var,
                self.weight,
                self.bias,
                self.training or not self.track_running_stats,
                self.momentum if self.momentum is not None else 0.0,
                self.eps,
            )
        dims = [0, *range(2, input.dim())]
        x = input.float()
        count = torch.tensor(float(x.numel() // x.shape[1]), device=x.device)
        stats = torch.cat([x.sum(dims), (x * x).sum(dims), count.view(1)])
        stats = _AllReduceSum.apply(stats)  # differentiable sum over ranks
        c = x.shape[1]
        n = stats[-1]
        mean = stats[:c] / n
        var = (stats[c : 2 * c] / n - mean * mean).clamp_min(0.0)
        if self.track_running_stats and self.running_mean is not None:
            with torch.no_grad():
                self.num_batches_tracked += 1
                momentum = (
                    self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                )
                unbiased = var.detach() * n / (n - 1).clamp_min(1.0)
                self.running_mean.mul_(1 - momentum).add_(momentum * mean.detach())
                self.running_var.mul_(1 - momentum).add_(momentum * unbiased)
        shape = [1, c] + [1] * (input.dim() - 2)
        y = (x - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y.to(input.dtype)


def convert_batchnorm(module: nn.Module, device_type: str) -> nn.Module:
    """Replace every BatchNorm layer by a cross-rank one: ``nn.SyncBatchNorm`` on CUDA, :class:`DistBatchNorm` else."""
    if device_type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    return _convert(module)


def _convert(module: nn.Module) -> nn.Module:
    out = module
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(module, DistBatchNorm):
        out = DistBatchNorm(
            module.num_features, module.eps, module.momentum, module.affine, module.track_running_stats
        )
        if module.affine:
            with torch.no_grad():
                out.weight.copy_(module.weight)
                out.bias.copy_(module.bias)
            out.weight.requires_grad_(module.weight.requires_grad)
            out.bias.requires_grad_(module.bias.requires_grad)
        if module.track_running_stats:
            out.running_mean.copy_(module.running_mean)
            out.running_var.copy_(module.running_var)
            out.num_batches_tracked.copy_(module.num_batches_tracked)
        out.train(module.training)
    for name, child in module.named_children():
        out.add_module(name, _convert(child))
    return out
