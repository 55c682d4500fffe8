"""The weights of one named adapter and what they do to a linear's computation.

An adapter knows the geometry of the linear it adapts (:class:`LinearGeometry`: column- or
row-parallel, sizes, sharding, groups) and offers the few hooks an adapted linear calls:

* column-parallel bases: :meth:`Adapter.adapt_output` turns the base's output (or, for LoRA,
  adds to it);
* row-parallel bases: :meth:`Adapter.adapt_input` changes what the base multiplies, and
  :meth:`Adapter.partial_term` is a term to add to the base's *unreduced* output, so that it
  joins the base's one all-reduce (or reduce-scatter);
* :meth:`Adapter.merge_into` folds the adapter into the base weight (and back).

Tensor parallelism, LoRA (``y = W x + s B A x``): on a column-parallel base ``A`` is
replicated and ``B`` split like the base's output rows (stacked parts included); on a
row-parallel base ``A`` is split like the base's input columns and ``B`` replicated. (IA)^3's
scale vector is split like the output (column) or the input (row). Every adapter parameter
records its layout (:func:`megaspec.parallel.mark_sharded`), so gathering, saving and
loading work as for any other parameter, and initialisation draws the *full* tensor, so
TP=N holds TP=1's adapter.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from megaspec.parallel import (
    ParallelGroups,
    TensorParallelSharding,
    copy_to_tensor_parallel_region,
    gather_from_sequence_parallel_region,
    gather_from_tensor_parallel_region,
    gather_full,
    mark_sharded,
    new_sharded_parameter,
    normal_init,
    ones_init,
    scatter_to_tensor_parallel_region,
    sequence_parallel_replicated,
    shard_of_full,
    sharding_of,
    uniform_init,
    zeros_init,
)
from megaspec.config.adapters import AdapterConfig, IA3Config, LoraConfig

LinearKind = Literal["column", "row"]


@dataclass(frozen=True)
class LinearGeometry:
    """What an adapter needs to know about the linear it adapts.

    Attributes:
        kind: ``column`` (output features split over ranks) or ``row`` (input features).
        input_size, output_size: the full (tensor-parallel size 1) sizes.
        parts: stacked blocks of the output (``[gate; up]``: 2), each split over ranks.
        sequence_parallel: whether the input (column) or output (row) is split along the
            sequence.
        gather_output: a column base that gathers its output features.
        input_is_parallel: a row base whose input is already split.
        groups: the base's process groups.
    """

    kind: LinearKind
    input_size: int
    output_size: int
    parts: int
    sequence_parallel: bool
    gather_output: bool
    input_is_parallel: bool
    groups: ParallelGroups

    @property
    def output_sharding(self) -> TensorParallelSharding | None:
        """Layout of a tensor over output features (``None``: replicated)."""
        return TensorParallelSharding(dim=0, parts=self.parts) if self.kind == "column" else None

    @property
    def input_sharding(self) -> TensorParallelSharding | None:
        """Layout of a tensor over input features (``None``: replicated)."""
        return TensorParallelSharding(dim=0) if self.kind == "row" else None


class Adapter(nn.Module):
    """One named adapter of one linear (subclasses: :class:`LoraAdapter`, :class:`IA3Adapter`).

    ``config`` is the config it was built from (saved with it).
    """

    def __init__(self, config: AdapterConfig, geometry: LinearGeometry) -> None:
        super().__init__()
        self.config = config
        self.geometry = geometry

    def adapt_output(self, output: Tensor, hidden: Tensor) -> Tensor:
        """Column bases: the output with this adapter applied (``hidden`` is the layer input)."""
        return output

    def adapt_input(self, hidden: Tensor) -> Tensor:
        """Row bases: what the base multiplies instead of ``hidden``."""
        return hidden

    def partial_term(self, hidden: Tensor) -> Tensor | None:
        """Row bases: a term to add to the base's unreduced output, or ``None``."""
        return None

    def merge_into(self, weight: Tensor, bias: Tensor | None, *, undo: bool) -> None:
        """Fold this adapter into the base's local ``weight`` and ``bias`` in place (or undo it)."""
        raise NotImplementedError(f"{type(self).__name__}.merge_into")


class LoraAdapter(Adapter):
    """``s B A x``: ``A`` is ``[rank, input]``, ``B`` ``[output, rank]`` (full shapes)."""

    def __init__(self, config: LoraConfig, geometry: LinearGeometry, base_weight: Tensor) -> None:
        super().__init__(config, geometry)
        self.rank = config.rank
        self.scale = config.scale
        self.dropout = nn.Dropout(config.dropout) if config.dropout > 0 else nn.Identity()
        groups, dtype, device = geometry.groups, base_weight.dtype, base_weight.device
        a_sharding = TensorParallelSharding(dim=1) if geometry.kind == "row" else None
        a_shape = (config.rank, geometry.input_size)
        if config.init == "svd":
            self.lora_A = _svd_directions(config.rank, base_weight, a_sharding, geometry)
        else:
            bound = 1 / math.sqrt(geometry.input_size)  # PEFT's kaiming_uniform_(a=sqrt(5))
            init = uniform_init(-bound, bound) if config.init == "zeros" else normal_init(1 / config.rank)
            self.lora_A = new_sharded_parameter(
                a_shape, a_sharding, init, groups, dtype=dtype, device=device
            )
        self.lora_B = new_sharded_parameter(
            (geometry.output_size, config.rank), geometry.output_sharding, zeros_init(), groups,
            dtype=dtype, device=device,
        )  # fmt: skip

    def adapt_output(self, output: Tensor, hidden: Tensor) -> Tensor:
        groups, tensor_group = self.geometry.groups, self.geometry.groups.tensor
        a: Tensor = self.lora_A
        if self.geometry.sequence_parallel:
            # Each rank sees its slice of the sequence: A's gradient is summed over ranks,
            # and the small [s/tp, b, rank] product is gathered instead of the input.
            low = F.linear(self.dropout(hidden), sequence_parallel_replicated(a, groups))
            low = gather_from_sequence_parallel_region(low, tensor_group)
        else:
            # B is split: A's input gradient is the sum of every rank's part.
            low = copy_to_tensor_parallel_region(F.linear(self.dropout(hidden), a), tensor_group)
        delta = F.linear(low, self.lora_B) * self.scale
        if self.geometry.gather_output:
            delta = gather_from_tensor_parallel_region(delta, tensor_group)
        return output + delta

    def partial_term(self, hidden: Tensor) -> Tensor | None:
        groups = self.geometry.groups
        if not self.geometry.input_is_parallel:
            hidden = scatter_to_tensor_parallel_region(hidden, groups.tensor)
        low = F.linear(self.dropout(hidden), self.lora_A)  # [s, b, rank], this rank's part
        # B multiplies a sum over ranks: its gradient is summed over ranks too.
        return F.linear(low, copy_to_tensor_parallel_region(self.lora_B, groups.tensor)) * self.scale

    def merge_into(self, weight: Tensor, bias: Tensor | None, *, undo: bool) -> None:
        delta = (self.lora_B.float() @ self.lora_A.float()) * self.scale  # [out_r, in] or [out, in_r]
        weight.add_(delta.to(weight.dtype), alpha=-1.0 if undo else 1.0)

    def extra_repr(self) -> str:
        return f"rank={self.rank}, scale={self.scale:g}"


class IA3Adapter(Adapter):
    """(IA)^3: ``output * l`` on column bases, ``base(x * l)`` on row bases; ``l`` starts at 1."""

    def __init__(self, config: IA3Config, geometry: LinearGeometry, base_weight: Tensor) -> None:
        super().__init__(config, geometry)
        if geometry.gather_output:
            raise ValueError("(IA)^3 on a column-parallel linear with gather_output is not supported")
        size = geometry.output_size if geometry.kind == "column" else geometry.input_size
        sharding = geometry.output_sharding if geometry.kind == "column" else geometry.input_sharding
        self.ia3_scale = new_sharded_parameter(
            (size,), sharding, ones_init(), geometry.groups,
            dtype=base_weight.dtype, device=base_weight.device,
        )  # fmt: skip

    def adapt_output(self, output: Tensor, hidden: Tensor) -> Tensor:
        return output * self.ia3_scale

    def adapt_input(self, hidden: Tensor) -> Tensor:
        scale: Tensor = self.ia3_scale
        if not self.geometry.input_is_parallel:  # the base splits a full input itself
            full = gather_full(scale, sharding_of(scale), self.geometry.groups)
            return hidden * full.to(hidden.dtype)
        return hidden * scale

    def merge_into(self, weight: Tensor, bias: Tensor | None, *, undo: bool) -> None:
        scale = self.ia3_scale.detach()
        factor = 1.0 / scale if undo else scale
        if self.geometry.kind == "column":
            weight.mul_(factor.to(weight.dtype).unsqueeze(1))
            if bias is not None:
                bias.mul_(factor.to(bias.dtype))
        else:
            weight.mul_(factor.to(weight.dtype).unsqueeze(0))


def _svd_directions(
    rank: int, base_weight: Tensor, sharding: TensorParallelSharding | None, geometry: LinearGeometry
) -> nn.Parameter:
    """``A`` spanning the base weight's top-``rank`` right singular vectors, each scaled by
    the square root of its singular value; computed from the gathered full weight."""
    groups = geometry.groups
    full = gather_full(base_weight, sharding_of(base_weight), groups).float().cpu()
    _, singular, right = torch.linalg.svd(full, full_matrices=False)  # right: [k, input]
    directions = right[:rank] * singular[:rank].sqrt().unsqueeze(1)  # [rank, input]
    local = directions if sharding is None else shard_of_full(
        directions, sharding, groups.tensor_rank, groups.tensor_size
    )
    parameter = nn.Parameter(local.to(device=base_weight.device, dtype=base_weight.dtype).contiguous())
    if sharding is not None:
        mark_sharded(parameter, sharding)
    return parameter


def build_adapter(config: AdapterConfig, geometry: LinearGeometry, base_weight: Tensor) -> Adapter:
    """The adapter ``config`` describes, for a linear of ``geometry``.

    Raises:
        ValueError: for a LoRA rank larger than ``min(input_size, output_size)``, or an
            adapter type that cannot adapt this linear.
    """
    if isinstance(config, LoraConfig):
        largest = min(geometry.input_size, geometry.output_size)
        if config.rank > largest:
            raise ValueError(
                f"LoRA rank {config.rank} is larger than this linear allows: min(input_size "
                f"{geometry.input_size}, output_size {geometry.output_size}) = {largest}"
            )
        return LoraAdapter(config, geometry, base_weight)
    if isinstance(config, IA3Config):
        return IA3Adapter(config, geometry, base_weight)
    raise ValueError(f"no adapter of type {config.type_name!r}")
