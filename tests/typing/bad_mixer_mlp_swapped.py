"""Wrong: a mixer in the ``mlp`` slot and an MLP in the ``mixer`` slot.

The builders have the same keywords, so only the returned Protocols tell them apart: a
``Mixer`` needs ``context`` (the MLP slot never passes it) and an ``Mlp`` does not accept it.
"""

from dataclasses import replace

from torch import Tensor, nn

from megaspec.backends import torch as torch_backend
from megaspec.context import LayerContext
from megaspec.layers import MLP, SelfAttention
from megaspec.parallel import ParallelGroups
from megaspec.transformer_config import AttentionConfig, MlpConfig, TransformerConfig


class ContextMlp(nn.Module):
    """An MLP that (wrongly) asks for the per-call context."""

    def __init__(self, *, config: TransformerConfig, groups: ParallelGroups, layer_index: int) -> None:
        super().__init__()

    def forward(self, hidden: Tensor, *, context: LayerContext) -> Tensor:
        return hidden


attention = AttentionConfig(num_heads=4)
mlp_config = MlpConfig(ffn_hidden_size=128)
llama = torch_backend.llama_layer_submodules(attention, mlp_config)
mixer_builder = SelfAttention.as_mixer_submodule(attention, torch_backend.attention_submodules())
mlp_builder = MLP.as_mlp_submodule(mlp_config, torch_backend.mlp_submodules())

mixer_as_mlp = replace(llama, mlp=mixer_builder)  # expect: arg-type
mlp_as_mixer = replace(llama, mixer=mlp_builder)  # expect: arg-type
context_mlp = replace(llama, mlp=ContextMlp)  # expect: arg-type
