"""Gathering tensors from every rank with gradients."""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

__all__ = ('gather_with_grad', 'world_size')


class _GatherWithGrad(torch.autograd.Function):
    """All-gather along dim 0 whose backward sums the gradients of every rank."""

    @staticmethod
    def forward(ctx: Any, tensor: Tensor, sizes: list[int]) -> Tensor:
        rank = dist.get_rank()
        longest = max(sizes)
        padded = tensor.new_zeros((longest, *tensor.shape[1:]))
        padded[: tensor.shape[0]] = tensor
        chunks = [torch.empty_like(padded) for _ in sizes]
        dist.all_gather(chunks, padded)
        ctx.rank = rank
        ctx.sizes = sizes
        return torch.cat([c[:n] for c, n in zip(chunks, sizes)])

    @staticmethod
    def backward(ctx: Any, *grads: Tensor) -> tuple[Tensor, None]:
        grad = grads[0].contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        start = sum(ctx.sizes[: ctx.rank])
        return grad[start : start + ctx.sizes[ctx.rank]], None


def world_size() -> int:
    """Number of ranks of the initialised process group.

    Returns:
        The world size, or 1 without an initialised process group.
    """
    if dist.is_available() and dist.is_initialized():
        return int(dist.get_world_size())
    return 1


def gather_with_grad(tensor: Tensor) -> tuple[Tensor, int]:
    """Concatenate a tensor from every rank along dim 0, keeping gradients.

    The backward pass all-reduces (sums) the gradient of the gathered tensor and
    hands each rank the slice of its own input, so a rank's input receives the
    gradients that every rank's loss sends to it. Ranks may contribute different
    numbers of rows. Without an initialised process group (or with one rank) the
    tensor is returned unchanged.

    Args:
        tensor: Local tensor ``[n, ...]``; trailing dimensions must agree on all
            ranks.

    Returns:
        The concatenation over ranks (in rank order) and the row offset of this
        rank's rows in it.
    """
    if world_size() == 1:
        return tensor, 0
    size = torch.tensor([tensor.shape[0]], device=tensor.device, dtype=torch.long)
    sizes_t = [torch.empty_like(size) for _ in range(dist.get_world_size())]
    dist.all_gather(sizes_t, size)
    sizes = [int(s.item()) for s in sizes_t]
    gathered = _GatherWithGrad.apply(tensor.contiguous(), sizes)
    assert isinstance(gathered, Tensor)
    return gathered, sum(sizes[: dist.get_rank()])
