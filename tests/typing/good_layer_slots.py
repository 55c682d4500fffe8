"""Right: every slot of a transformer layer filled with a builder of its own kind.

Covers ``bad_norm_in_mlp_slot``, ``bad_mixer_mlp_swapped`` and ``bad_missing_slot``: norms
(both kinds, optional post-norms), a mixer, an MLP and a custom MLP class fitting
``MlpBuilder`` directly.
"""

from torch import Tensor, nn

from megaspec.backends import torch as torch_backend
from megaspec.layers import MLP, LayerNorm, RMSNorm, SelfAttention, TransformerLayerSubmodules
from megaspec.parallel import ParallelGroups
from megaspec.transformer_config import AttentionConfig, MlpConfig, TransformerConfig


class IdentityMlp(nn.Module):
    """An MLP slot filler that fits ``MlpBuilder`` without an adapter."""

    handles_sequence_parallel = True  # position-wise: a slice of the sequence is fine

    def __init__(self, *, config: TransformerConfig, groups: ParallelGroups, layer_index: int) -> None:
        super().__init__()

    def forward(self, hidden: Tensor) -> Tensor:
        return hidden


attention = AttentionConfig(num_heads=4)
mixer = SelfAttention.as_mixer_submodule(attention, torch_backend.attention_submodules(qk_norm=True))
mlp = MLP.as_mlp_submodule(MlpConfig(ffn_hidden_size=128), torch_backend.mlp_submodules())

gemma_like = TransformerLayerSubmodules(
    input_norm=RMSNorm,
    mixer=mixer,
    pre_mlp_norm=RMSNorm,
    mlp=mlp,
    post_mixer_norm=RMSNorm,
    post_mlp_norm=LayerNorm,
)
identity_mlp = TransformerLayerSubmodules(
    input_norm=LayerNorm, mixer=mixer, pre_mlp_norm=LayerNorm, mlp=IdentityMlp
)
