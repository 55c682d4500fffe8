"""Wrong: norms and MLPs in each other's slots.

``RMSNorm`` takes ``hidden_size``/``sharded_input`` (the norm builder's keywords), not
``layer_index``, so it does not fit the ``mlp`` slot; an MLP builder does not fit a norm slot.
"""

from dataclasses import replace

from megaspec.backends import torch as torch_backend
from megaspec.layers import MLP, LayerNorm, RMSNorm
from megaspec.transformer_config import AttentionConfig, MlpConfig

mlp_config = MlpConfig(ffn_hidden_size=128)
llama = torch_backend.llama_layer_submodules(AttentionConfig(num_heads=4), mlp_config)
mlp_builder = MLP.as_mlp_submodule(mlp_config, torch_backend.mlp_submodules())

rms_as_mlp = replace(llama, mlp=RMSNorm)  # expect: arg-type
layer_norm_as_mlp = replace(llama, mlp=LayerNorm)  # expect: arg-type
mlp_as_norm = replace(llama, input_norm=mlp_builder)  # expect: arg-type
mlp_as_post_norm = replace(llama, post_mlp_norm=mlp_builder)  # expect: arg-type
