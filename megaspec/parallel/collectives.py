"""Autograd-aware tensor-parallel collectives.

Each function is the forward half of a conjugate pair (Megatron-LM's "mappings"): the
backward pass runs the conjugate collective, so tensor-parallel layers get correct gradients
from plain autograd. ``torch.distributed.nn.functional`` offers differentiable collectives
too, but with the *same* collective in both directions (e.g. all-reduce backward of an
all-reduce), which is not what a tensor-parallel region needs; these few classes are that
missing piece and nothing more.

Activations are laid out ``[sequence, batch, hidden]`` (see ``megaspec.parallel``):
sequence-parallel functions split and gather dimension 0, tensor-parallel ones the last
dimension. With a group of size 1 (or ``None``) every function returns its input unchanged.
The autograd graph keeps only weak references to process groups (see ``ParallelGroups``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

from megaspec.parallel.groups import strong_group, weak_group

Group = dist.ProcessGroup | None


def _size(group: Group) -> int:
    return 1 if group is None else dist.get_world_size(group)


def _rank(group: Group) -> int:
    return 0 if group is None else dist.get_rank(group)


def _all_reduce(tensor: Tensor, group: Group) -> Tensor:
    tensor = tensor.contiguous()
    dist.all_reduce(tensor, group=group)
    return tensor


def _all_gather_first_dim(tensor: Tensor, group: Group) -> Tensor:
    tensor = tensor.contiguous()
    output = tensor.new_empty((tensor.shape[0] * _size(group), *tensor.shape[1:]))
    # torch 2.13 renamed all_gather_into_tensor to all_gather_single; the GPU image has 2.11.
    gather = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor
    gather(output, tensor, group=group)
    return output


def _reduce_scatter_first_dim(tensor: Tensor, group: Group) -> Tensor:
    size = _size(group)
    if tensor.shape[0] % size != 0:
        raise ValueError(
            f"cannot reduce-scatter dimension 0 of size {tensor.shape[0]} over {size} ranks"
        )
    tensor = tensor.contiguous()
    output = tensor.new_empty((tensor.shape[0] // size, *tensor.shape[1:]))
    scatter = getattr(dist, "reduce_scatter_single", None) or dist.reduce_scatter_tensor
    scatter(output, tensor, group=group)
    return output


def _split(tensor: Tensor, dim: int, group: Group) -> Tensor:
    size = _size(group)
    if tensor.shape[dim] % size != 0:
        raise ValueError(
            f"cannot split dimension {dim} of size {tensor.shape[dim]} over {size} ranks"
        )
    return tensor.chunk(size, dim=dim)[_rank(group)].contiguous()


def _all_gather_last_dim(tensor: Tensor, group: Group) -> Tensor:
    # Gather along dim 0 (one contiguous collective), then move the rank axis next to the
    # last dimension: [size * rows, ..., n] -> [..., size * n].
    size = _size(group)
    gathered = _all_gather_first_dim(tensor, group)
    parts = gathered.chunk(size, dim=0)
    return torch.cat(parts, dim=-1)


class _CopyToRegion(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, tensor: Tensor, group: Group) -> Tensor:
        ctx.group = weak_group(group)
        return tensor

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        return _all_reduce(grad, strong_group(ctx.group, "tensor-parallel")), None


class _ReduceFromRegion(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, tensor: Tensor, group: Group) -> Tensor:
        return _all_reduce(tensor.clone(), group)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        return grad, None


class _ScatterLastDim(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, tensor: Tensor, group: Group) -> Tensor:
        ctx.group = weak_group(group)
        return _split(tensor, -1, group)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        return _all_gather_last_dim(grad, strong_group(ctx.group, "tensor-parallel")), None


class _GatherLastDim(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, tensor: Tensor, group: Group) -> Tensor:
        ctx.group = weak_group(group)
        return _all_gather_last_dim(tensor, group)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        return _split(grad, -1, strong_group(ctx.group, "tensor-parallel")), None


class _ScatterSequence(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, tensor: Tensor, group: Group) -> Tensor:
        ctx.group = weak_group(group)
        return _split(tensor, 0, group)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        return _all_gather_first_dim(grad, strong_group(ctx.group, "tensor-parallel")), None


class _GatherSequence(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, tensor: Tensor, group: Group) -> Tensor:
        ctx.group = weak_group(group)
        return _all_gather_first_dim(tensor, group)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        return _reduce_scatter_first_dim(grad, strong_group(ctx.group, "tensor-parallel")), None


class _ReduceScatterSequence(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, tensor: Tensor, group: Group) -> Tensor:
        ctx.group = weak_group(group)
        return _reduce_scatter_first_dim(tensor, group)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        return _all_gather_first_dim(grad, strong_group(ctx.group, "tensor-parallel")), None


class _GatherSequenceForReplicated(torch.autograd.Function):
    # The gathered sequence feeds a computation replicated on every rank, whose gradient is
    # the same full tensor on every rank: backward keeps this rank's slice, no reduction.
    @staticmethod
    def forward(ctx: Any, tensor: Tensor, group: Group) -> Tensor:
        ctx.group = weak_group(group)
        return _all_gather_first_dim(tensor, group)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        return _split(grad, 0, strong_group(ctx.group, "tensor-parallel")), None


def _apply(function: type[torch.autograd.Function], tensor: Tensor, group: Group) -> Tensor:
    if _size(group) == 1:
        return tensor
    # torch declares Function.apply without annotations.
    result: Tensor = function.apply(tensor, group)  # type: ignore[no-untyped-call]
    return result


def copy_to_tensor_parallel_region(tensor: Tensor, group: Group) -> Tensor:
    """Identity forward; all-reduce of the gradient backward (input of a column-parallel op)."""
    return _apply(_CopyToRegion, tensor, group)


def reduce_from_tensor_parallel_region(tensor: Tensor, group: Group) -> Tensor:
    """All-reduce forward; identity backward (output of a row-parallel op)."""
    return _apply(_ReduceFromRegion, tensor, group)


def scatter_to_tensor_parallel_region(tensor: Tensor, group: Group) -> Tensor:
    """Keep this rank's slice of the last dimension; all-gather it backward."""
    return _apply(_ScatterLastDim, tensor, group)


def gather_from_tensor_parallel_region(tensor: Tensor, group: Group) -> Tensor:
    """All-gather the last dimension; keep this rank's slice of the gradient backward."""
    return _apply(_GatherLastDim, tensor, group)


def scatter_to_sequence_parallel_region(tensor: Tensor, group: Group) -> Tensor:
    """Keep this rank's slice of the sequence (dim 0); all-gather the gradient backward."""
    return _apply(_ScatterSequence, tensor, group)


def gather_from_sequence_parallel_region(tensor: Tensor, group: Group) -> Tensor:
    """All-gather the sequence (dim 0); reduce-scatter the gradient backward."""
    return _apply(_GatherSequence, tensor, group)


def reduce_scatter_to_sequence_parallel_region(tensor: Tensor, group: Group) -> Tensor:
    """Sum partial results over ranks and keep this rank's sequence slice; all-gather backward."""
    return _apply(_ReduceScatterSequence, tensor, group)


def replicated_over_sequence(
    function: Callable[[Tensor], Tensor], tensor: Tensor, group: Group
) -> Tensor:
    """``function`` of the whole sequence, given and returning this rank's sequence slice.

    For a computation that needs every position (a mixer without tensor-parallel code) in a
    sequence-parallel region: all-gather the sequence, run ``function`` replicated on every
    rank, keep this rank's slice of its output. Backward gathers the output's gradient, runs
    ``function``'s backward on every rank (its parameters get the full gradient, as at
    tensor-parallel size 1) and keeps this rank's slice of the input's gradient.
    """
    if _size(group) == 1:
        return function(tensor)
    # torch declares Function.apply without annotations.
    full: Tensor = _GatherSequenceForReplicated.apply(tensor, group)  # type: ignore[no-untyped-call]
    return scatter_to_sequence_parallel_region(function(full), group)
