"""Transformer building blocks: norms, attention, MLP, the transformer layer, block sequences."""

from megaspec.layers.attention import (
    DotProductAttention,
    SelfAttention,
    SelfAttentionSubmodules,
    rotary_dim,
)
from megaspec.layers.fused import rotate
from megaspec.layers.block_sequence import BlockSequence, BlockSequenceSpec
from megaspec.layers.mlp import MLP, MlpSubmodules
from megaspec.layers.norms import LayerNorm, RMSNorm
from megaspec.layers.slots import (
    SlotBuildError,
    building_slot,
    checked_child,
    checked_module,
    checked_output,
    describe_builder,
)
from megaspec.layers.transformer_layer import TransformerLayer, TransformerLayerSubmodules

__all__ = [
    "MLP",
    "BlockSequence",
    "BlockSequenceSpec",
    "DotProductAttention",
    "LayerNorm",
    "MlpSubmodules",
    "RMSNorm",
    "SelfAttention",
    "SelfAttentionSubmodules",
    "TransformerLayer",
    "SlotBuildError",
    "TransformerLayerSubmodules",
    "rotate",
    "building_slot",
    "checked_child",
    "checked_module",
    "checked_output",
    "describe_builder",
    "rotary_dim",
]
