"""Wrong: te adapters in slots of another kind.

A row-parallel te linear where a column-parallel one belongs (and the reverse), a norm-fused
column linear as a projection, a norm as core attention, an attention kernel as a norm, and
a te linear in a norm slot.
"""

from dataclasses import replace

from megaspec.backends import te
from megaspec.layers import MlpSubmodules, SelfAttentionSubmodules, TransformerLayerSubmodules
from megaspec.transformer_config import AttentionConfig, MlpConfig

attention = SelfAttentionSubmodules(
    linear_qkv=te.TERowParallelLinear,  # expect: arg-type
    core_attention=te.TERMSNorm,  # expect: arg-type
    linear_proj=te.norm_column_linear(normalization="RMSNorm", eps=1e-5),  # expect: arg-type
)
mlp = MlpSubmodules(
    linear_fc1=te.TERowParallelLinear,  # expect: arg-type
    linear_fc2=te.TEColumnParallelLinear,  # expect: arg-type
)
layer: TransformerLayerSubmodules = te.llama_layer_submodules(
    AttentionConfig(num_heads=4), MlpConfig(ffn_hidden_size=128)
)
attention_as_norm = replace(layer, input_norm=te.TEDotProductAttention)  # expect: arg-type
linear_as_norm = replace(layer, pre_mlp_norm=te.TEColumnParallelLinear)  # expect: arg-type
unknown_norm = te.norm_column_linear(normalization="ScaleNorm", eps=1e-5)  # expect: arg-type
