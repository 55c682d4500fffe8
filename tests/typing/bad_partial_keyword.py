"""Wrong: ``functools.partial`` binding a misspelled or mistyped keyword.

``layer_idx`` is not a keyword of ``MLP`` (and it is the parent's to pass anyway),
``conv_config`` is not one of ``CausalConvMixer``, and ``mlp`` gets the wrong config type.
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

misspelled_mlp = replace(
    llama,
    mlp=functools.partial(MLP, mlp=mlp_config, submodules=subs, layer_idx=3),  # expect: call-arg
)
misspelled_mixer = replace(
    llama,
    mixer=functools.partial(CausalConvMixer, conv_config=ConvMixerConfig()),  # expect: call-arg
)
mistyped_mlp = replace(
    llama,
    mlp=functools.partial(MLP, mlp=attention, submodules=subs),  # expect: arg-type
)
