"""Column- and row-parallel linear layers.

Shapes use the library's activation layout ``[sequence, batch, features]``. With sequence
parallelism the sequence dimension of inputs (column) and outputs (row) is split across
tensor-parallel ranks: ``[sequence / tp, batch, features]``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from megaspec.parallel.collectives import (
    copy_to_tensor_parallel_region,
    gather_from_sequence_parallel_region,
    gather_from_tensor_parallel_region,
    reduce_from_tensor_parallel_region,
    reduce_scatter_to_sequence_parallel_region,
    scatter_to_tensor_parallel_region,
)
from megaspec.parallel.groups import ParallelGroups
from megaspec.parallel.initializers import zeros_init
from megaspec.parallel.linear_cross_entropy import linear_cross_entropy
from megaspec.parallel.sharding import InitMethod, TensorParallelSharding, new_sharded_parameter


def _divide(numerator: int, denominator: int, what: str) -> int:
    if numerator % denominator != 0:
        raise ValueError(f"{what} ({numerator}) is not divisible by {denominator}")
    return numerator // denominator


def sequence_parallel_replicated(parameter: Tensor, groups: ParallelGroups) -> Tensor:
    """Use a replicated parameter on sequence-parallel activations.

    Each rank sees a different slice of the sequence, so the parameter's gradient on one rank
    is a partial sum; this identity (forward) all-reduces the gradient (backward), so every
    rank ends with the full gradient, as with tensor-parallel size 1.
    """
    return copy_to_tensor_parallel_region(parameter, groups.tensor)


def column_parallel_matmul(
    hidden: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    groups: ParallelGroups,
    *,
    sequence_parallel: bool,
) -> Tensor:
    """``hidden @ weight.T + bias`` for a weight holding this rank's output features.

    Also used by a language model's output layer when it shares the embedding's weight.
    Input ``[s, b, in]`` (``[s / tp, b, in]`` when sequence parallel); output
    ``[s, b, out / tp]``.
    """
    if sequence_parallel:
        hidden = gather_from_sequence_parallel_region(hidden, groups.tensor)
    else:
        hidden = copy_to_tensor_parallel_region(hidden, groups.tensor)
    return F.linear(hidden, weight, bias)


class ColumnParallelLinear(nn.Module):
    """``y = x W^T + b`` with ``W``'s output features split across tensor-parallel ranks.

    Input ``[s, b, input_size]`` (``[s / tp, b, input_size]`` with ``sequence_parallel``);
    output ``[s, b, output_size / tp]``, or ``[s, b, output_size]`` with ``gather_output``.
    ``stacked_parts`` > 1 says the output features are that many stacked blocks each split
    across ranks (see :mod:`megaspec.parallel.sharding`).

    Raises:
        ValueError: if ``output_size`` does not split evenly, or ``gather_output`` is combined
            with ``sequence_parallel`` or ``stacked_parts`` > 1 (both would reorder features).
    """

    def __init__(
        self,
        *,
        input_size: int,
        output_size: int,
        groups: ParallelGroups,
        init_method: InitMethod,
        bias: bool = False,
        gather_output: bool = False,
        sequence_parallel: bool = False,
        stacked_parts: int = 1,
        params_dtype: torch.dtype = torch.float32,
    ) -> None:
        super().__init__()
        tp = groups.tensor_size
        _divide(output_size, stacked_parts * tp, "ColumnParallelLinear output_size")
        if gather_output and (sequence_parallel or stacked_parts > 1):
            raise ValueError(
                "ColumnParallelLinear: gather_output cannot be combined with sequence_parallel "
                "or stacked_parts > 1"
            )
        self.input_size = input_size
        self.output_size = output_size
        self.groups = groups
        self.gather_output = gather_output
        self.sequence_parallel = sequence_parallel
        self.stacked_parts = stacked_parts
        sharding = TensorParallelSharding(dim=0, parts=stacked_parts)
        self.weight = new_sharded_parameter(
            (output_size, input_size), sharding, init_method, groups, dtype=params_dtype
        )
        self.bias = (
            new_sharded_parameter(
                (output_size,), sharding, zeros_init(), groups, dtype=params_dtype
            )
            if bias
            else None
        )

    def forward(self, hidden: Tensor) -> Tensor:
        output = column_parallel_matmul(
            hidden, self.weight, self.bias, self.groups, sequence_parallel=self.sequence_parallel
        )
        if self.gather_output:
            output = gather_from_tensor_parallel_region(output, self.groups.tensor)
        return output

    def linear_cross_entropy(
        self,
        hidden: Tensor,
        target: Tensor,
        *,
        vocab_size: int,
        chunk_tokens: int | None,
        compiled: bool = False,
    ) -> Tensor:
        """``[s, b]`` float32 cross-entropy losses of this layer's output (a vocabulary)
        against ``target`` (``[s, b]`` ids, ``-100`` ignored), chunk by chunk without full
        logits: :func:`~megaspec.parallel.linear_cross_entropy`'s
        :class:`~megaspec.parallel.LinearCrossEntropyLayer` capability.

        Raises:
            ValueError: with ``stacked_parts`` > 1 (a rank's output features are then not one
                contiguous slice of a vocabulary).
        """
        if self.stacked_parts != 1:
            raise ValueError(
                f"ColumnParallelLinear.linear_cross_entropy: the output must be one vocabulary, "
                f"not {self.stacked_parts} stacked parts"
            )
        return linear_cross_entropy(
            hidden,
            self.weight,
            target,
            self.groups,
            sequence_parallel=self.sequence_parallel,
            bias=self.bias,
            vocab_size=vocab_size,
            chunk_tokens=chunk_tokens,
            compiled=compiled,
        )

    def extra_repr(self) -> str:
        return (
            f"input_size={self.input_size}, output_size={self.output_size}, "
            f"tp={self.groups.tensor_size}, bias={self.bias is not None}, "
            f"sequence_parallel={self.sequence_parallel}"
        )


class RowParallelLinear(nn.Module):
    """``y = x W^T + b`` with ``W``'s input features split across tensor-parallel ranks.

    Input ``[s, b, input_size / tp]`` if ``input_is_parallel`` else ``[s, b, input_size]``
    (then split here); output ``[s, b, output_size]`` summed over ranks, or
    ``[s / tp, b, output_size]`` with ``sequence_parallel`` (reduce-scatter instead of
    all-reduce). The bias is added once, after the reduction.

    Raises:
        ValueError: if ``input_size`` does not split evenly, or ``sequence_parallel`` is asked
            for with an input that is not already split.
    """

    def __init__(
        self,
        *,
        input_size: int,
        output_size: int,
        groups: ParallelGroups,
        init_method: InitMethod,
        bias: bool = False,
        input_is_parallel: bool = True,
        sequence_parallel: bool = False,
        params_dtype: torch.dtype = torch.float32,
    ) -> None:
        super().__init__()
        _divide(input_size, groups.tensor_size, "RowParallelLinear input_size")
        if sequence_parallel and not input_is_parallel:
            raise ValueError("RowParallelLinear: sequence_parallel needs input_is_parallel=True")
        self.input_size = input_size
        self.output_size = output_size
        self.groups = groups
        self.input_is_parallel = input_is_parallel
        self.sequence_parallel = sequence_parallel
        self.weight = new_sharded_parameter(
            (output_size, input_size),
            TensorParallelSharding(dim=1),
            init_method,
            groups,
            dtype=params_dtype,
        )
        self.bias = (
            new_sharded_parameter((output_size,), None, zeros_init(), groups, dtype=params_dtype)
            if bias
            else None
        )

    def forward(self, hidden: Tensor) -> Tensor:
        return self.reduce_partial(self.partial_output(hidden))

    def partial_output(self, hidden: Tensor) -> Tensor:
        """This rank's unreduced term ``x_r W_r^T``: ``[s, b, output_size]`` (no bias).

        With :meth:`reduce_partial`, what ``forward`` does in two steps, so that an adapter
        can add its own partial term before the one reduction (see :mod:`megaspec.peft`).
        """
        if not self.input_is_parallel:
            hidden = scatter_to_tensor_parallel_region(hidden, self.groups.tensor)
        return F.linear(hidden, self.weight)

    def reduce_partial(self, partial: Tensor) -> Tensor:
        """Sum ``partial`` over ranks (all-reduce, or reduce-scatter of the sequence under
        sequence parallelism) and add the bias."""
        if self.sequence_parallel:
            output = reduce_scatter_to_sequence_parallel_region(partial, self.groups.tensor)
        else:
            output = reduce_from_tensor_parallel_region(partial, self.groups.tensor)
        if self.bias is None:
            return output
        bias = (
            sequence_parallel_replicated(self.bias, self.groups)
            if self.sequence_parallel
            else self.bias
        )
        return output + bias

    def extra_repr(self) -> str:
        return (
            f"input_size={self.input_size}, output_size={self.output_size}, "
            f"tp={self.groups.tensor_size}, bias={self.bias is not None}, "
            f"sequence_parallel={self.sequence_parallel}"
        )
