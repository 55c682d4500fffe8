"""Wrong: config fields of the wrong type, misspelled, missing, or assigned after creation.

Configs are frozen dataclasses, so mypy checks every field where the config is written.
"""

from megaspec.transformer_config import AttentionConfig, MlpConfig, TransformerConfig

heads_as_text = AttentionConfig(num_heads="8")  # expect: arg-type
fractional_groups = AttentionConfig(num_heads=8, num_query_groups=2.5)  # expect: arg-type
bias_as_int = AttentionConfig(num_heads=8, bias=1)  # expect: arg-type
hf_name = AttentionConfig(num_heads=8, rope_theta=500000.0)  # expect: call-arg
dtype_as_text = TransformerConfig(hidden_size=64, num_layers=2, params_dtype="bf16")  # expect: arg-type
no_layers = TransformerConfig(hidden_size=64)  # expect: call-arg
ffn_as_float = MlpConfig(ffn_hidden_size=4 * 64 * 2 / 3)  # expect: arg-type

attention = AttentionConfig(num_heads=8)
attention.num_heads = 16  # expect: misc
