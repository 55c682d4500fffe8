"""Right: classes with extra constructor arguments enter a slot through an adapter.

Covers ``bad_class_without_adapter``: ``as_mlp_submodule``/``as_mixer_submodule`` bind the
extra settings, and ``functools.partial`` binds a custom mixer's extra keyword.
"""

import functools

from examples.custom_mixer import CausalConvMixer, ConvMixerConfig
from megaspec.backends import torch as torch_backend
from megaspec.layers import MLP, RMSNorm, SelfAttention, TransformerLayerSubmodules
from megaspec.transformer_config import AttentionConfig, MlpConfig

mlp = MLP.as_mlp_submodule(MlpConfig(ffn_hidden_size=128), torch_backend.mlp_submodules())
layer = TransformerLayerSubmodules(
    input_norm=RMSNorm,
    mixer=SelfAttention.as_mixer_submodule(
        AttentionConfig(num_heads=4), torch_backend.attention_submodules()
    ),
    pre_mlp_norm=RMSNorm,
    mlp=mlp,
)
conv_layer = TransformerLayerSubmodules(
    input_norm=RMSNorm,
    mixer=CausalConvMixer.as_mixer_submodule(ConvMixerConfig(kernel_size=3)),
    pre_mlp_norm=RMSNorm,
    mlp=mlp,
)
partial_conv_layer = TransformerLayerSubmodules(
    input_norm=RMSNorm,
    mixer=functools.partial(CausalConvMixer, conv=ConvMixerConfig(kernel_size=3)),
    pre_mlp_norm=RMSNorm,
    mlp=mlp,
)
