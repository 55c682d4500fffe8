"""Column- and row-parallel linears on Transformer Engine, with megaspec's weight layouts.

Each adapter holds a ``transformer_engine.pytorch`` module as ``te_module`` and fits the same
builder Protocol as :class:`~megaspec.parallel.ColumnParallelLinear` /
:class:`~megaspec.parallel.RowParallelLinear`. The weights are megaspec parameters with the
same shard layout (fused QKV packed per KV group, a gated fc1 ``[gate_r; up_r]`` on each
rank through ``stacked_parts``), so the values of a torch-backend model fit unchanged (see
:mod:`megaspec.backends.portable` for the names).

Transformer Engine does the tensor-parallel communication itself (``parallel_mode`` and the
tensor group of :class:`~megaspec.parallel.ParallelGroups`).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from megaspec.backends.te._engine import adopt_parameter, te_pytorch
from megaspec.builders import ColumnLinearBuilder
from megaspec.parallel import (
    ParallelGroups,
    gather_from_tensor_parallel_region,
    ones_init,
    scatter_to_tensor_parallel_region,
    zeros_init,
)
from megaspec.parallel.sharding import InitMethod, TensorParallelSharding, new_sharded_parameter

Normalization = Literal["RMSNorm", "LayerNorm"]


def _check_column(
    name: str,
    output_size: int,
    stacked_parts: int,
    groups: ParallelGroups,
    gather_output: bool,
    sequence_parallel: bool,
) -> None:
    if output_size % (stacked_parts * groups.tensor_size) != 0:
        raise ValueError(
            f"{name}: output_size ({output_size}) does not split into {stacked_parts} part(s) "
            f"of {groups.tensor_size} tensor-parallel shard(s)"
        )
    if gather_output and (sequence_parallel or stacked_parts > 1):
        raise ValueError(
            f"{name}: gather_output cannot be combined with sequence_parallel or "
            f"stacked_parts > 1"
        )


def _column_parameters(
    module: nn.Module,
    *,
    input_size: int,
    output_size: int,
    groups: ParallelGroups,
    init_method: InitMethod,
    bias: bool,
    stacked_parts: int,
    params_dtype: torch.dtype,
) -> None:
    """Give ``module`` (a TE column-parallel module) megaspec's weight (and bias) shards."""
    sharding = TensorParallelSharding(dim=0, parts=stacked_parts)
    weight = new_sharded_parameter(
        (output_size, input_size), sharding, init_method, groups, dtype=params_dtype
    )
    adopt_parameter(module, "weight", weight)
    if bias:
        adopt_parameter(
            module,
            "bias",
            new_sharded_parameter((output_size,), sharding, zeros_init(), groups, dtype=params_dtype),
        )


class _TEColumnOutput(nn.Module):
    """What the two column adapters share: their output and ``gather_output``."""

    te_module: nn.Module
    groups: ParallelGroups
    _gather_output: bool

    @property
    def gather_output(self) -> bool:
        """Whether the output holds every rank's features (the builder's ``gather_output``)."""
        return self._gather_output

    def forward(self, hidden: Tensor) -> Tensor:
        output: Tensor = self.te_module(hidden)  # [s, b, output_size / tp]
        if self._gather_output:
            output = gather_from_tensor_parallel_region(output, self.groups.tensor)
        return output


class TEColumnParallelLinear(_TEColumnOutput):
    """``te.pytorch.Linear(parallel_mode="column")``: a :class:`~megaspec.builders.ColumnLinear`.

    Input ``[s, b, input_size]`` (``[s / tp, b, input_size]`` with ``sequence_parallel``);
    output ``[s, b, output_size / tp]`` (``[s, b, output_size]`` with ``gather_output``).

    Raises:
        ValueError: as :class:`~megaspec.parallel.ColumnParallelLinear` does.
    """

    def __init__(
        self,
        *,
        input_size: int,
        output_size: int,
        groups: ParallelGroups,
        init_method: InitMethod,
        bias: bool,
        gather_output: bool,
        sequence_parallel: bool,
        stacked_parts: int,
        params_dtype: torch.dtype,
    ) -> None:
        super().__init__()
        name = type(self).__name__
        _check_column(name, output_size, stacked_parts, groups, gather_output, sequence_parallel)
        self._gather_output = gather_output
        self.groups = groups
        self.te_module = te_pytorch.Linear(
            input_size,
            output_size,
            bias=bias,
            params_dtype=params_dtype,
            parallel_mode="column",
            tp_group=groups.tensor,
            tp_size=groups.tensor_size,
            sequence_parallel=sequence_parallel,
            device="meta",
        )
        _column_parameters(
            self.te_module,
            input_size=input_size,
            output_size=output_size,
            groups=groups,
            init_method=init_method,
            bias=bias,
            stacked_parts=stacked_parts,
            params_dtype=params_dtype,
        )


class TERowParallelLinear(nn.Module):
    """``te.pytorch.Linear(parallel_mode="row")``: a :class:`~megaspec.builders.RowLinear`.

    Input ``[s, b, input_size / tp]`` (``[s, b, input_size]`` unless ``input_is_parallel``);
    output ``[s, b, output_size]`` (``[s / tp, b, output_size]`` with ``sequence_parallel``).

    Raises:
        ValueError: if ``input_size`` does not split evenly; for ``sequence_parallel`` without
            ``input_is_parallel``; for a bias under sequence parallelism on more than one rank
            (Transformer Engine leaves that bias's gradient a per-rank partial sum, which
            Megatron-core all-reduces outside the layer and megaspec does not).
    """

    def __init__(
        self,
        *,
        input_size: int,
        output_size: int,
        groups: ParallelGroups,
        init_method: InitMethod,
        bias: bool,
        input_is_parallel: bool,
        sequence_parallel: bool,
        params_dtype: torch.dtype,
    ) -> None:
        super().__init__()
        name = type(self).__name__
        if input_size % groups.tensor_size != 0:
            raise ValueError(
                f"{name}: input_size ({input_size}) is not divisible by {groups.tensor_size}"
            )
        if sequence_parallel and not input_is_parallel:
            raise ValueError(f"{name}: sequence_parallel needs input_is_parallel=True")
        if bias and sequence_parallel and groups.tensor_size > 1:
            raise ValueError(
                f"{name}: a bias under sequence parallelism is not supported on the te backend "
                f"(its gradient would be a per-rank partial sum); use "
                f"megaspec.parallel.RowParallelLinear for this slot"
            )
        self._input_is_parallel = input_is_parallel
        self.groups = groups
        self.te_module = te_pytorch.Linear(
            input_size,
            output_size,
            bias=bias,
            params_dtype=params_dtype,
            parallel_mode="row",
            tp_group=groups.tensor,
            tp_size=groups.tensor_size,
            sequence_parallel=sequence_parallel,
            device="meta",
        )
        weight = new_sharded_parameter(
            (output_size, input_size), TensorParallelSharding(dim=1), init_method, groups,
            dtype=params_dtype,
        )
        adopt_parameter(self.te_module, "weight", weight)
        if bias:
            adopt_parameter(
                self.te_module,
                "bias",
                new_sharded_parameter((output_size,), None, zeros_init(), groups, dtype=params_dtype),
            )

    @property
    def input_is_parallel(self) -> bool:
        """Whether the input arrives split by features (the builder's ``input_is_parallel``)."""
        return self._input_is_parallel

    def forward(self, hidden: Tensor) -> Tensor:
        if not self._input_is_parallel:
            hidden = scatter_to_tensor_parallel_region(hidden, self.groups.tensor)
        output: Tensor = self.te_module(hidden)  # [s, b, output_size], summed over ranks
        return output


class TENormColumnParallelLinear(_TEColumnOutput):
    """``te.pytorch.LayerNormLinear``: a norm fused into a column-parallel linear.

    Computes ``linear(norm(x))`` in one module; the layer's own norm slot then holds an
    :class:`~megaspec.backends.te.norms.IdentityNorm` (see :func:`norm_column_linear`). The
    norm's scale (and LayerNorm's bias) are drawn before the linear's weight, in the order
    the torch backend draws the separate norm and linear, so a seed gives the same values.

    Shapes as :class:`TEColumnParallelLinear`.

    Raises:
        ValueError: as :class:`TEColumnParallelLinear`, and for sequence parallelism on more
            than one rank (the norm's scale would see a slice of the sequence and its
            gradient stay a per-rank partial sum).
    """

    def __init__(
        self,
        *,
        input_size: int,
        output_size: int,
        groups: ParallelGroups,
        init_method: InitMethod,
        bias: bool,
        gather_output: bool,
        sequence_parallel: bool,
        stacked_parts: int,
        params_dtype: torch.dtype,
        normalization: Normalization,
        eps: float,
    ) -> None:
        super().__init__()
        name = type(self).__name__
        _check_column(name, output_size, stacked_parts, groups, gather_output, sequence_parallel)
        if sequence_parallel and groups.tensor_size > 1:
            raise ValueError(
                f"{name}: sequence parallelism is not supported by the te backend's norm-fused "
                f"linears (the norm's scale gradient would be a per-rank partial sum); use "
                f"unfused norms (fuse_norms=False) or the torch backend"
            )
        self._gather_output = gather_output
        self.groups = groups
        self.te_module = te_pytorch.LayerNormLinear(
            input_size,
            output_size,
            eps=eps,
            normalization=normalization,
            bias=bias,
            params_dtype=params_dtype,
            parallel_mode="column",
            tp_group=groups.tensor,
            tp_size=groups.tensor_size,
            sequence_parallel=sequence_parallel,
            device="meta",
        )
        adopt_parameter(
            self.te_module,
            "layer_norm_weight",
            new_sharded_parameter((input_size,), None, ones_init(), groups, dtype=params_dtype),
        )
        if normalization == "LayerNorm":
            adopt_parameter(
                self.te_module,
                "layer_norm_bias",
                new_sharded_parameter((input_size,), None, zeros_init(), groups, dtype=params_dtype),
            )
        _column_parameters(
            self.te_module,
            input_size=input_size,
            output_size=output_size,
            groups=groups,
            init_method=init_method,
            bias=bias,
            stacked_parts=stacked_parts,
            params_dtype=params_dtype,
        )


def norm_column_linear(*, normalization: Normalization, eps: float) -> ColumnLinearBuilder:
    """A :class:`~megaspec.builders.ColumnLinearBuilder` of :class:`TENormColumnParallelLinear`
    normalising with ``normalization`` and ``eps`` (the model's ``norm_epsilon``)."""

    def build(
        *,
        input_size: int,
        output_size: int,
        groups: ParallelGroups,
        init_method: InitMethod,
        bias: bool,
        gather_output: bool,
        sequence_parallel: bool,
        stacked_parts: int,
        params_dtype: torch.dtype,
    ) -> TENormColumnParallelLinear:
        return TENormColumnParallelLinear(
            input_size=input_size,
            output_size=output_size,
            groups=groups,
            init_method=init_method,
            bias=bias,
            gather_output=gather_output,
            sequence_parallel=sequence_parallel,
            stacked_parts=stacked_parts,
            params_dtype=params_dtype,
            normalization=normalization,
            eps=eps,
        )

    build.__qualname__ = f"norm_column_linear(normalization={normalization!r}, eps={eps})"
    return build
