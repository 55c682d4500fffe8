"""Transformer building blocks: norms, attention, MLP, the transformer layer, block sequences."""

from megaspec.builders import LayerSpec
from megaspec.layers.attention import DotProductAttention, SelfAttention, SelfAttentionSubmodules
from megaspec.layers.block_sequence import BlockSequence, BlockSequenceSpec
from megaspec.layers.mlp import MLP, MlpSubmodules, gated_activation
from megaspec.layers.norms import IdentityNorm, LayerNorm, RMSNorm
from megaspec.layers.slots import (
    SlotBuildError,
    building_slot,
    checked_child,
    checked_module,
    checked_output,
    declared_sequence_parallel,
    describe_builder,
    refuse_rebound_keywords,
)
from megaspec.layers.transformer_layer import TransformerLayer, TransformerLayerSubmodules

__all__ = [
    "MLP",
    "BlockSequence",
    "BlockSequenceSpec",
    "DotProductAttention",
    "IdentityNorm",
    "LayerNorm",
    "LayerSpec",
    "MlpSubmodules",
    "RMSNorm",
    "SelfAttention",
    "SelfAttentionSubmodules",
    "SlotBuildError",
    "TransformerLayer",
    "TransformerLayerSubmodules",
    "building_slot",
    "checked_child",
    "checked_module",
    "checked_output",
    "declared_sequence_parallel",
    "describe_builder",
    "gated_activation",
    "refuse_rebound_keywords",
]
