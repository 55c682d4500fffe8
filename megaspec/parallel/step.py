"""What a data- and tensor-parallel training step needs beyond the engines: the global
gradient norm, the global mean loss, and the step itself."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.distributed.tensor import DTensor

from megaspec.parallel.groups import ParallelGroups
from megaspec.parallel.sharding import sharding_of


def clip_grad_norm(model: nn.Module, max_norm: float, groups: ParallelGroups) -> Tensor:
    """Scale the gradients so that their global 2-norm is at most ``max_norm``; return the
    norm before clipping (a scalar tensor, equal on every rank).

    The norm is that of the whole model's gradient, the one a single process would compute:
    FSDP's DTensor gradients are reduced over ``dp`` by DTensor itself (as in
    ``torch.nn.utils.clip_grad_norm_``); tensor-parallel-sharded gradients
    (``sharding_of(p)`` set) have their squares summed over the ``tp`` group, while
    replicated ones (norm weights, row-parallel biases), equal on every ``tp`` rank, count
    once. ``torch.nn.utils.clip_grad_norm_`` alone would miss the other ``tp`` ranks' shards.
    """
    parameters = [p for p in model.parameters() if p.grad is not None]
    sharded = [p.grad for p in parameters if p.grad is not None and sharding_of(p) is not None]
    replicated = [p.grad for p in parameters if p.grad is not None and sharding_of(p) is None]
    sharded_squared = _squared_norm(sharded)
    tensor_group = groups.tensor
    if tensor_group is not None:
        dist.all_reduce(sharded_squared, group=tensor_group)
    total = (sharded_squared + _squared_norm(replicated)).sqrt()
    torch.nn.utils.clip_grads_with_norm_(parameters, max_norm, total)
    return total


def _squared_norm(grads: list[Tensor]) -> Tensor:
    """The squared 2-norm of ``grads`` together, as a plain (local) tensor."""
    norm = torch.nn.utils.get_total_norm(grads)
    if isinstance(norm, DTensor):
        norm = norm.full_tensor()  # reduces FSDP's dp shards' partial norms
    return norm.square()


def global_mean_loss(loss: Tensor, groups: ParallelGroups) -> Tensor:
    """The mean of ``loss`` (a scalar, detached) over the data-parallel replicas, for logging.

    The tensor-parallel ranks of a replica already hold the same loss.
    """
    mean = loss.detach().clone()
    data = groups.data
    if data is not None and groups.data_size > 1:
        dist.all_reduce(mean, op=dist.ReduceOp.AVG, group=data)
    return mean


@dataclass(frozen=True)
class StepResult:
    """A step's global mean loss and gradient norm before clipping (scalar tensors)."""

    loss: Tensor
    grad_norm: Tensor


def train_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    inputs: Tensor,
    labels: Tensor,
    groups: ParallelGroups,
    *,
    max_norm: float,
) -> StepResult:
    """One optimizer step on this replica's ``inputs`` and ``labels`` ([batch, seq]).

    Forward, mean per-token loss, backward (the engine averages gradients over ``dp``),
    :func:`clip_grad_norm` to ``max_norm``, ``optimizer.step()``. With every replica given an
    equal slice of the global batch (:func:`megaspec.parallel.local_batch`), the step is the
    one a single process takes on the global batch.
    """
    losses: Tensor = model(inputs, labels=labels)  # [batch, seq] float32
    loss = losses.mean()
    optimizer.zero_grad(set_to_none=True)
    # torch.autograd.backward is typed; Tensor.backward is not.
    torch.autograd.backward(loss)
    grad_norm = clip_grad_norm(model, max_norm, groups)
    optimizer.step()
    return StepResult(loss=global_mean_loss(loss, groups), grad_norm=grad_norm)
