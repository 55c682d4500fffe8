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

Initialisation draws only the local shard, from counter-based random numbers numbered over
the full tensor (:mod:`megaspec.parallel.draws`), so tensor-parallel size N holds exactly the
weights of size 1 for the same seed, and no rank draws a weight it does not own. On the meta
device a parameter records how to draw it (:class:`ParameterInit`) for
:func:`megaspec.parallel.materialize`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor

from megaspec.parallel.draws import InitMethod as InitMethod  # re-exported: its historical home
from megaspec.parallel.draws import draw_slices, draw_stream
from megaspec.parallel.groups import ParallelGroups

_SHARDING_ATTRIBUTE = "_megaspec_tensor_parallel_sharding"
_INIT_ATTRIBUTE = "_megaspec_parameter_init"


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


@dataclass(frozen=True)
class ParameterInit:
    """How to draw one rank's shard of a parameter: what a meta-device parameter records.

    Attributes:
        stream: the parameter's random stream (:func:`megaspec.parallel.draws.draw_stream`).
        init_method: maps the stream's uniforms to values, elementwise.
        full_shape: the full (tensor-parallel size 1) shape.
        sharding: the layout, or ``None`` for a replicated parameter.
        tensor_rank, tensor_size: the rank whose shard the parameter holds, of how many.
    """

    stream: int
    init_method: InitMethod
    full_shape: tuple[int, ...]
    sharding: TensorParallelSharding | None
    tensor_rank: int
    tensor_size: int

    def local_shape(self) -> tuple[int, ...]:
        """The shard's shape.

        Raises:
            ValueError: if the sharded dimension does not split evenly.
        """
        shape = list(self.full_shape)
        if self.sharding is not None:
            shape[self.sharding.dim] //= _split_checked(self.full_shape, self.sharding, self.tensor_size)
        return tuple(shape)

    def fill_(self, destination: Tensor) -> None:
        """Write this rank's shard into ``destination`` (the local shape, any device and dtype).

        Only the shard's own elements are drawn, on the CPU in float32 and a chunk at a time,
        then cast and copied: host memory grows by one chunk, not by a full weight.
        """
        full_shape = self.full_shape or (1,)  # a scalar is drawn as one element
        target = destination if self.full_shape else destination.view(1)
        dim = 0 if self.sharding is None else self.sharding.dim
        parts = 1 if self.sharding is None else self.sharding.parts
        per_part = full_shape[dim] // parts
        per_rank = per_part if self.sharding is None else per_part // self.tensor_size
        first_of_rank = 0 if self.sharding is None else self.tensor_rank * per_rank
        for part in range(parts):
            # shard_of_full's layout: rank r holds block r of every part, parts stacked.
            start = part * per_part + first_of_rank
            chunks = draw_slices(self.stream, self.init_method, full_shape, dim, start, start + per_rank)
            for offset, values in chunks:
                target.narrow(dim, part * per_rank + offset, values.shape[dim]).copy_(values)


def _split_checked(full_shape: tuple[int, ...], sharding: TensorParallelSharding, size: int) -> int:
    """``size``, after checking that ``sharding.dim`` splits into parts of ``size`` shards."""
    length = full_shape[sharding.dim]
    if length % (sharding.parts * size) != 0:
        raise ValueError(
            f"dimension {sharding.dim} of size {length} does not split into "
            f"{sharding.parts} part(s) of {size} equal shard(s)"
        )
    return size


def parameter_init(parameter: Tensor) -> ParameterInit | None:
    """What a meta-device parameter made by :func:`new_sharded_parameter` recorded, or ``None``."""
    record = getattr(parameter, _INIT_ATTRIBUTE, None)
    assert record is None or isinstance(record, ParameterInit)
    return record


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

    The parameter takes one stream from torch's global CPU generator (the same on every rank
    and tensor-parallel size), and only its shard is drawn (see :mod:`megaspec.parallel.draws`),
    in float32 on the CPU, then cast to ``dtype`` and copied to ``device`` (default: torch's
    current default device, so ``with torch.device("cuda"):`` works). On the meta device
    nothing is drawn but the stream: the parameter records a :class:`ParameterInit`, and
    :func:`megaspec.parallel.materialize` later draws exactly what eager construction would.

    Raises:
        ValueError: if the sharded dimension does not split evenly.
    """
    target = device if device is not None else torch.empty(0).device
    record = ParameterInit(
        draw_stream(), init_method, tuple(full_shape), sharding, groups.tensor_rank, groups.tensor_size
    )
    parameter = torch.nn.Parameter(torch.empty(record.local_shape(), dtype=dtype, device=target))
    if target.type == "meta":
        setattr(parameter, _INIT_ATTRIBUTE, record)
    else:
        with torch.no_grad():
            record.fill_(parameter)
    if sharding is not None:
        mark_sharded(parameter, sharding)
    return parameter


def init_tensor_(tensor: Tensor, init_method: InitMethod) -> Tensor:
    """Fill ``tensor`` (any device and dtype) with ``init_method``'s values as a replicated
    parameter, from a new stream of torch's global CPU generator; returns ``tensor``.

    For weights megaspec does not create, e.g. a plain ``torch.nn`` module in a slot.
    """
    record = ParameterInit(draw_stream(), init_method, tuple(tensor.shape), None, 0, 1)
    with torch.no_grad():
        record.fill_(tensor)
    return tensor
