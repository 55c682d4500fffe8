"""Wrong: row-parallel linears where column-parallel ones are required, and vice versa.

``RowParallelLinear`` has no ``gather_output``/``stacked_parts`` keywords, and
``ColumnParallelLinear`` has no ``input_is_parallel``: mypy rejects the swap in every
linear slot (QKV/projection, fc1/fc2, the model's output layer).
"""

from megaspec.backends import torch as torch_backend
from megaspec.layers import BlockSequenceSpec, DotProductAttention, MlpSubmodules, RMSNorm
from megaspec.layers import SelfAttentionSubmodules
from megaspec.models import GPTSubmodules
from megaspec.parallel import ColumnParallelLinear, RowParallelLinear
from megaspec.transformer_config import AttentionConfig, MlpConfig

attention = SelfAttentionSubmodules(
    linear_qkv=RowParallelLinear,  # expect: arg-type
    core_attention=DotProductAttention,
    linear_proj=ColumnParallelLinear,  # expect: arg-type
)
mlp = MlpSubmodules(
    linear_fc1=RowParallelLinear,  # expect: arg-type
    linear_fc2=ColumnParallelLinear,  # expect: arg-type
)
layer = torch_backend.llama_layer(AttentionConfig(num_heads=4), MlpConfig(ffn_hidden_size=128))
model = GPTSubmodules(
    blocks=BlockSequenceSpec(pattern=[layer], num_layers=2),
    final_norm=RMSNorm,
    output_layer=RowParallelLinear,  # expect: arg-type
)
