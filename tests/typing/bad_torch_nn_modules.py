"""Wrong: plain ``torch.nn`` modules put in slots whose builder keywords they lack.

``torch.nn.RMSNorm``/``LayerNorm`` take ``normalized_shape``, ``torch.nn.Linear`` takes
``in_features``/``out_features``, and ``torch.nn.MultiheadAttention`` takes ``embed_dim``:
none can be called with the slot's keywords.
"""

from dataclasses import replace

import torch

from megaspec.backends import torch as torch_backend
from megaspec.transformer_config import AttentionConfig, MlpConfig

llama = torch_backend.llama_layer_submodules(
    AttentionConfig(num_heads=4), MlpConfig(ffn_hidden_size=128)
)
torch_rms_norm = replace(llama, input_norm=torch.nn.RMSNorm)  # expect: arg-type
torch_layer_norm = replace(llama, pre_mlp_norm=torch.nn.LayerNorm)  # expect: arg-type
torch_attention = replace(llama, mixer=torch.nn.MultiheadAttention)  # expect: arg-type
torch_linear = replace(torch_backend.mlp_submodules(), linear_fc1=torch.nn.Linear)  # expect: arg-type
