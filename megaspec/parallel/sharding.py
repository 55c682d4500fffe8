"""How a local tensor-parallel parameter relates to its full (TP=1) tensor.

This module is the one place that knows the shard layouts, so initialisation, gradient
gathering in tests and checkpoint conversion all agree:

* ``dim``: the dimension split across ranks (0 = output features of a column-parallel
  linear or rows of a vocab-parallel embedding, 1 = input features of a row-parallel linear).
* ``parts``: the full tensor is ``parts`` equal blocks stacked along ``dim``, and *each
  block* is split across ranks. A gated MLP's fc1 is ``[gate; up]`` (``parts=2``), so rank r
  holds ``[gate_r; up_r]`` and computes its own gate and up halves without communication.
  Fused QKV needs ``parts=1`` because its rows are already packed per KV group
  (``[q_g, k_g, v_g]`` for each group g) and ranks own whole groups.

Initialisation draws the *full* tensor from a CPU generator and keeps the local shard, so
tensor-parallel size N gives exactly the weights of size 1 for the same seed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor

from megaspec.parallel.groups import ParallelGroups

InitMethod = Callable[[Tensor], None]
"""Fills a full (unsharded) tensor in place, drawing from torch's default CPU generator."""

_SHARDING_ATTRIBUTE = "_megaspec_tensor_parallel_sharding"


@dataclass(frozen=True)
class TensorParallelSharding:
    """Layout of a tensor-parallel parameter: split ``dim`` into ``parts`` blocks, each split."""

    dim: int
    parts: int = 1


def mark_sharded(parameter: Tensor, sharding: TensorParallelSharding) -> None:
    """Record that ``parameter`` holds one rank's shard with layout ``sharding``."""
    setattr(parameter, _SHARDING_ATTRIBUTE, sharding)


def sharding_of(parameter: Tensor) -> TensorParallelSharding | None:
    """The layout recorded by :func:`mark_sharded`, or ``None`` for a replicated parameter."""
    sharding = getattr(parameter, _SHARDING_ATTRIBUTE, None)
    assert sharding is None or isinstance(sharding, TensorParallelSharding)
    return sharding


def shard_of_full(full: Tensor, sharding: TensorParallelSharding, rank: int, size: int) -> Tensor:
    """Rank ``rank``'s shard of ``full`` (a view where possible)."""
    blocks = full.chunk(sharding.parts, dim=sharding.dim)
    if any(block.shape[sharding.dim] % size != 0 for block in blocks) or (
        full.shape[sharding.dim] % sharding.parts != 0
    ):
        raise ValueError(
            f"dimension {sharding.dim} of size {full.shape[sharding.dim]} does not split into "
            f"{sharding.parts} part(s) of {size} equal shard(s)"
        )
    pieces = [block.chunk(size, dim=sharding.dim)[rank] for block in blocks]
    return pieces[0] if len(pieces) == 1 else torch.cat(pieces, dim=sharding.dim)


def full_from_shards(shards: list[Tensor], sharding: TensorParallelSharding) -> Tensor:
    """Inverse of :func:`shard_of_full`: the full tensor from every rank's shard, in rank order."""
    per_rank_blocks = [shard.chunk(sharding.parts, dim=sharding.dim) for shard in shards]
    blocks = [
        torch.cat([rank_blocks[part] for rank_blocks in per_rank_blocks], dim=sharding.dim)
        for part in range(sharding.parts)
    ]
    return torch.cat(blocks, dim=sharding.dim)


def gather_full(tensor: Tensor, sharding: TensorParallelSharding | None, groups: ParallelGroups) -> Tensor:
    """All-gather a sharded tensor (a parameter or its gradient) into its full form.

    A replicated tensor (``sharding is None``) is returned as it is.
    """
    if sharding is None or groups.tensor_size == 1:
        return tensor.detach().clone()
    shards = [torch.empty_like(tensor) for _ in range(groups.tensor_size)]
    dist.all_gather(shards, tensor.detach().contiguous(), group=groups.tensor)
    return full_from_shards(shards, sharding)


def new_sharded_parameter(
    full_shape: tuple[int, ...],
    sharding: TensorParallelSharding | None,
    init_method: InitMethod,
    groups: ParallelGroups,
    *,
    dtype: torch.dtype,
    device: torch.device | None = None,
) -> torch.nn.Parameter:
    """A parameter holding this rank's shard of a freshly initialised full tensor.

    The full tensor is drawn on the CPU (so every tensor-parallel size draws the same numbers
    in the same order) in float32, then sharded, cast to ``dtype`` and moved to ``device``
    (default: torch's current default device, so ``with torch.device("cuda"):`` works).
    On the meta device nothing is drawn: ``with torch.device("meta"):`` builds a model's
    structure and shapes at no cost (for inspection), and leaves the CPU generator untouched.
    """
    target = device if device is not None else torch.empty(0).device
    full = torch.empty(full_shape, dtype=torch.float32, device="meta" if target.type == "meta" else "cpu")
    init_method(full)
    local = full if sharding is None else shard_of_full(full, sharding, groups.tensor_rank, groups.tensor_size)
    parameter = torch.nn.Parameter(local.to(device=target, dtype=dtype).contiguous())
    if sharding is not None:
        mark_sharded(parameter, sharding)
    return parameter
