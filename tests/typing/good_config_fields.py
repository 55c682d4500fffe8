"""Right: configs written with fields of the declared types; changes through ``replace``.

Covers ``bad_config_fields``.
"""

from dataclasses import replace

import torch

from megaspec.transformer_config import AttentionConfig, MlpConfig, TransformerConfig

grouped = AttentionConfig(num_heads=8, num_query_groups=2, rotary_base=500000.0, bias=True)
integer_base = AttentionConfig(num_heads=8, rotary_base=10000)  # an int is a valid float
config = TransformerConfig(hidden_size=64, num_layers=2, params_dtype=torch.bfloat16)
mlp = MlpConfig(ffn_hidden_size=int(4 * 64 * 2 / 3))
wider = replace(grouped, num_heads=16)
