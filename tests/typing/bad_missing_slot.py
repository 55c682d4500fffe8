"""Wrong: submodules dataclasses with a required slot left out or set to ``None``.

``mlp``, ``core_attention`` and ``linear_fc2`` have no default; ``None`` is allowed only in
the optional slots (``q_norm``, ``k_norm``, ``post_*_norm``).
"""

from megaspec.backends import torch as torch_backend
from megaspec.layers import MlpSubmodules, RMSNorm, SelfAttention, SelfAttentionSubmodules
from megaspec.layers import TransformerLayerSubmodules
from megaspec.parallel import ColumnParallelLinear, RowParallelLinear
from megaspec.transformer_config import AttentionConfig

mixer = SelfAttention.as_mixer_submodule(
    AttentionConfig(num_heads=4), torch_backend.attention_submodules()
)
no_mlp = TransformerLayerSubmodules(  # expect: call-arg
    input_norm=RMSNorm,
    mixer=mixer,
    pre_mlp_norm=RMSNorm,
)
none_mlp = TransformerLayerSubmodules(
    input_norm=RMSNorm,
    mixer=mixer,
    pre_mlp_norm=RMSNorm,
    mlp=None,  # expect: arg-type
)
no_core_attention = SelfAttentionSubmodules(  # expect: call-arg
    linear_qkv=ColumnParallelLinear,
    linear_proj=RowParallelLinear,
)
no_fc2 = MlpSubmodules(linear_fc1=ColumnParallelLinear)  # expect: call-arg
