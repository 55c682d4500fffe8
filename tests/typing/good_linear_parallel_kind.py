"""Right: column-parallel linears in column slots, row-parallel ones in row slots.

Covers ``bad_linear_parallel_kind``.
"""

from megaspec.backends import torch as torch_backend
from megaspec.layers import BlockSequenceSpec, DotProductAttention, MlpSubmodules, RMSNorm
from megaspec.layers import SelfAttentionSubmodules
from megaspec.models import GPTSubmodules
from megaspec.parallel import ColumnParallelLinear, RowParallelLinear
from megaspec.transformer_config import AttentionConfig, MlpConfig

attention = SelfAttentionSubmodules(
    linear_qkv=ColumnParallelLinear,
    core_attention=DotProductAttention,
    linear_proj=RowParallelLinear,
)
mlp = MlpSubmodules(linear_fc1=ColumnParallelLinear, linear_fc2=RowParallelLinear)
layer = torch_backend.llama_layer(AttentionConfig(num_heads=4), MlpConfig(ffn_hidden_size=128))
model = GPTSubmodules(
    blocks=BlockSequenceSpec(pattern=[layer], num_layers=2),
    final_norm=RMSNorm,
    output_layer=ColumnParallelLinear,
)
