"""Wrong: builder functions whose keywords do not match the slot's builder Protocol.

A mixer builder with a renamed keyword (``index`` for ``layer_index``) and an MLP builder
missing ``groups`` would fail with a ``TypeError`` when the layer calls them.
"""

from megaspec.backends import torch as torch_backend
from megaspec.layers import MLP, RMSNorm, SelfAttention, TransformerLayerSubmodules
from megaspec.parallel import ParallelGroups
from megaspec.transformer_config import AttentionConfig, MlpConfig, TransformerConfig


def build_attention(*, config: TransformerConfig, groups: ParallelGroups, index: int) -> SelfAttention:
    return SelfAttention(
        config=config,
        attention=AttentionConfig(num_heads=4),
        groups=groups,
        layer_index=index,
        submodules=torch_backend.attention_submodules(),
    )


def build_mlp(*, config: TransformerConfig, layer_index: int) -> MLP:
    return MLP(
        config=config,
        mlp=MlpConfig(ffn_hidden_size=128),
        groups=ParallelGroups.single(),
        layer_index=layer_index,
        submodules=torch_backend.mlp_submodules(),
    )


layer = TransformerLayerSubmodules(
    input_norm=RMSNorm,
    mixer=build_attention,  # expect: arg-type
    pre_mlp_norm=RMSNorm,
    mlp=build_mlp,  # expect: arg-type
)
