"""Wrong: a ``functools.partial`` of the wrong kind of module in a slot.

mypy checks a partial only by the keywords it binds and by the class it returns, and the
slots' module Protocols differ in a member only the right kind has: ``gather_output``
(column-parallel linears), ``input_is_parallel`` (row-parallel linears), ``eps`` (norms) and
``handles_sequence_parallel`` (MLPs and mixers). So a user's row-parallel LoRA wrapped in a
partial is rejected in a column slot, and a norm and an MLP in each other's slots.
"""

import functools
from dataclasses import replace

import torch
from torch import Tensor, nn

from megaspec.backends import torch as torch_backend
from megaspec.layers import MLP, DotProductAttention, RMSNorm, SelfAttentionSubmodules
from megaspec.parallel import ColumnParallelLinear, InitMethod, ParallelGroups, RowParallelLinear
from megaspec.transformer_config import AttentionConfig, MlpConfig, TransformerConfig


class RowParallelLoRA(RowParallelLinear):
    """A user's adapter over a row-parallel linear, with one extra constructor argument."""

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
        rank: int,
    ) -> None:
        super().__init__(
            input_size=input_size,
            output_size=output_size,
            groups=groups,
            init_method=init_method,
            bias=bias,
            input_is_parallel=input_is_parallel,
            sequence_parallel=sequence_parallel,
            params_dtype=params_dtype,
        )
        self.rank = rank


class ColumnParallelLoRA(ColumnParallelLinear):
    """The same over a column-parallel linear."""

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
        rank: int,
    ) -> None:
        super().__init__(
            input_size=input_size,
            output_size=output_size,
            groups=groups,
            init_method=init_method,
            bias=bias,
            gather_output=gather_output,
            sequence_parallel=sequence_parallel,
            stacked_parts=stacked_parts,
            params_dtype=params_dtype,
        )
        self.rank = rank


class ScaledNorm(nn.Module):
    """A user's norm with an extra setting (bound by a partial)."""

    def __init__(self, *, hidden_size: int, config: TransformerConfig, scale: float) -> None:
        super().__init__()
        self.eps = config.norm_epsilon
        self.scale = scale

    def forward(self, hidden: Tensor) -> Tensor:
        return hidden * self.scale


mlp_config = MlpConfig(ffn_hidden_size=128)
llama = torch_backend.llama_layer_submodules(AttentionConfig(num_heads=4), mlp_config)

row_lora_in_column_slot = SelfAttentionSubmodules(
    linear_qkv=functools.partial(RowParallelLoRA, rank=8),  # expect: arg-type
    core_attention=DotProductAttention,
    linear_proj=RowParallelLinear,
)
column_lora_in_row_slot = SelfAttentionSubmodules(
    linear_qkv=ColumnParallelLinear,
    core_attention=DotProductAttention,
    linear_proj=functools.partial(ColumnParallelLoRA, rank=8),  # expect: arg-type
)
norm_in_mlp_slot = replace(llama, mlp=functools.partial(ScaledNorm, scale=2.0))  # expect: arg-type
rms_norm_in_mlp_slot = replace(llama, mlp=functools.partial(RMSNorm))  # expect: arg-type
mlp_partial = functools.partial(MLP, mlp=mlp_config, submodules=torch_backend.mlp_submodules())
mlp_in_norm_slot = replace(llama, input_norm=mlp_partial)  # expect: arg-type
