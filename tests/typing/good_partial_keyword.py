"""Right: ``functools.partial`` binding exactly the extra keywords of a class.

Covers ``bad_partial_keyword``.
"""

import functools
from dataclasses import replace

from examples.custom_mixer import CausalConvMixer, ConvMixerConfig
from megaspec.backends import torch as torch_backend
from megaspec.layers import MLP
from megaspec.transformer_config import AttentionConfig, MlpConfig

attention = AttentionConfig(num_heads=4)
mlp_config = MlpConfig(ffn_hidden_size=128)
llama = torch_backend.llama_layer_submodules(attention, mlp_config)
subs = torch_backend.mlp_submodules()

partial_mlp = replace(llama, mlp=functools.partial(MLP, mlp=mlp_config, submodules=subs))
partial_mixer = replace(llama, mixer=functools.partial(CausalConvMixer, conv=ConvMixerConfig()))
