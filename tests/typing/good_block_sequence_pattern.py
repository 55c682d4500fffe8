"""Right: block-sequence patterns of layer builders and nested specs.

Covers ``bad_block_sequence_pattern``: a repeated layer, a hybrid pattern with a custom
mixer, and a nested spec.
"""

from dataclasses import replace

from examples.custom_mixer import CausalConvMixer, ConvMixerConfig
from megaspec.backends import torch as torch_backend
from megaspec.layers import BlockSequenceSpec, TransformerLayer
from megaspec.transformer_config import AttentionConfig, MlpConfig

attention = AttentionConfig(num_heads=4)
mlp = MlpConfig(ffn_hidden_size=128)
llama_submodules = torch_backend.llama_layer_submodules(attention, mlp)
attention_layer = TransformerLayer.as_layer_submodule(llama_submodules)
conv_layer = TransformerLayer.as_layer_submodule(
    replace(llama_submodules, mixer=CausalConvMixer.as_mixer_submodule(ConvMixerConfig()))
)

uniform = BlockSequenceSpec(pattern=[attention_layer], num_layers=4)
hybrid = BlockSequenceSpec(pattern=[attention_layer, attention_layer, conv_layer], num_layers=6)
nested = BlockSequenceSpec(pattern=[hybrid, attention_layer], num_layers=14)
