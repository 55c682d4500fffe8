"""Right: builder functions with exactly the slot's keywords, returning modules.

Covers ``bad_builder_signature`` and ``bad_builder_return_type``: each function takes the
slot's keywords and returns a module whose ``forward`` fits the slot.
"""

from megaspec.backends import torch as torch_backend
from megaspec.layers import MLP, RMSNorm, SelfAttention, TransformerLayerSubmodules
from megaspec.parallel import ParallelGroups
from megaspec.transformer_config import AttentionConfig, MlpConfig, TransformerConfig


def build_attention(
    *, config: TransformerConfig, groups: ParallelGroups, layer_index: int
) -> SelfAttention:
    return SelfAttention(
        config=config,
        attention=AttentionConfig(num_heads=4),
        groups=groups,
        layer_index=layer_index,
        submodules=torch_backend.attention_submodules(),
    )


def build_mlp(*, config: TransformerConfig, groups: ParallelGroups, layer_index: int) -> MLP:
    return MLP(
        config=config,
        mlp=MlpConfig(ffn_hidden_size=128),
        groups=groups,
        layer_index=layer_index,
        submodules=torch_backend.mlp_submodules(),
    )


layer = TransformerLayerSubmodules(
    input_norm=RMSNorm,
    mixer=build_attention,
    pre_mlp_norm=RMSNorm,
    mlp=build_mlp,
)
