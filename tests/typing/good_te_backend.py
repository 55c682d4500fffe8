"""Right: the te backend's adapters in their slots, and a spec mixing te and torch slots.

Covers ``bad_te_backend``. Type-checked without Transformer Engine installed: its objects are
``Any`` inside the adapters, whose megaspec-facing signatures are precise.
"""

from dataclasses import replace

from megaspec.backends import te
from megaspec.backends import torch as torch_backend
from megaspec.builders import (
    ColumnLinearBuilder,
    CoreAttentionBuilder,
    NormBuilder,
    RowLinearBuilder,
)
from megaspec.layers import (
    MLP,
    BlockSequenceSpec,
    DotProductAttention,
    IdentityNorm,
    MlpSubmodules,
    RMSNorm,
    SelfAttentionSubmodules,
    TransformerLayer,
)
from megaspec.parallel import ColumnParallelLinear, RowParallelLinear
from megaspec.transformer_config import AttentionConfig, MlpConfig

column: ColumnLinearBuilder = te.TEColumnParallelLinear
fused: ColumnLinearBuilder = te.norm_column_linear(normalization="RMSNorm", eps=1e-5)
row: RowLinearBuilder = te.TERowParallelLinear
core: CoreAttentionBuilder = te.TEDotProductAttention
norms: list[NormBuilder] = [te.TERMSNorm, te.TELayerNorm, IdentityNorm]

attention = AttentionConfig(num_heads=4, num_query_groups=2)
mlp = MlpConfig(ffn_hidden_size=128)

# te linears around the torch backend's SDPA kernel; torch linears around te attention.
te_linears_torch_kernel = replace(te.attention_submodules(), core_attention=DotProductAttention)
torch_linears_te_kernel = SelfAttentionSubmodules(
    linear_qkv=ColumnParallelLinear, core_attention=te.TEDotProductAttention, linear_proj=RowParallelLinear
)
mixed_mlp = MlpSubmodules(linear_fc1=te.TEColumnParallelLinear, linear_fc2=RowParallelLinear)

# A te layer whose MLP (and its norm) are the torch backend's: one replace.
layer = replace(
    te.llama_layer_submodules(attention, mlp),
    pre_mlp_norm=RMSNorm,
    mlp=MLP.as_mlp_submodule(mlp, torch_backend.mlp_submodules()),
)
model = te.gpt_submodules(
    BlockSequenceSpec(pattern=[TransformerLayer.as_layer_submodule(layer)], num_layers=2)
)
whole = te.llama_submodules(attention, mlp, 2, fuse_norms=False)
