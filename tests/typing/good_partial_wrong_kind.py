"""Right: partials of the right kind of module in each slot.

Covers ``bad_partial_wrong_kind``: the LoRA wrappers in their own slots, a user's norm (it
has ``eps``) in a norm slot, and ``torch.nn.RMSNorm`` behind an adapter function (it has
``eps`` too, so the norm Protocol's marker rejects no reasonable norm).
"""

import functools
from dataclasses import replace

import torch
from torch import Tensor, nn

from megaspec.backends import torch as torch_backend
from megaspec.layers import MLP, DotProductAttention, SelfAttentionSubmodules
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
    def __init__(
        self,
        *,
        hidden_size: int,
        config: TransformerConfig,
        groups: ParallelGroups,
        sharded_input: bool,
        init_method: InitMethod,
        scale: float,
    ) -> None:
        super().__init__()
        self.eps = config.norm_epsilon
        self.scale = scale

    def forward(self, hidden: Tensor) -> Tensor:
        return hidden * self.scale


def torch_rms_norm(
    *,
    hidden_size: int,
    config: TransformerConfig,
    groups: ParallelGroups,
    sharded_input: bool,
    init_method: InitMethod,
) -> torch.nn.RMSNorm:
    return torch.nn.RMSNorm(hidden_size, eps=config.norm_epsilon)


mlp_config = MlpConfig(ffn_hidden_size=128)
llama = torch_backend.llama_layer_submodules(AttentionConfig(num_heads=4), mlp_config)

lora_attention = SelfAttentionSubmodules(
    linear_qkv=functools.partial(ColumnParallelLoRA, rank=8),
    core_attention=DotProductAttention,
    linear_proj=functools.partial(RowParallelLoRA, rank=8),
)
user_norm = replace(llama, input_norm=functools.partial(ScaledNorm, scale=2.0))
torch_norm = replace(llama, pre_mlp_norm=torch_rms_norm)
mlp_partial = replace(
    llama, mlp=functools.partial(MLP, mlp=mlp_config, submodules=torch_backend.mlp_submodules())
)
