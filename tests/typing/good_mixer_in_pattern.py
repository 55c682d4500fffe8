"""Right: layers in block patterns, including a user's own layer class.

Covers ``bad_mixer_in_pattern``. ``TransformerLayer.as_layer_submodule`` returns a
``LayerSpec``, and so does its subclasses' (the classmethod builds ``cls``). A layer class of
one's own enters a pattern as ``LayerSpec(MyLayer)`` (or ``LayerSpec(partial(MyLayer, ...))``
for extra constructor arguments); its forward and its ``handles_sequence_parallel`` are
checked against the ``Layer`` Protocol.
"""

import functools

from torch import Tensor, nn

from megaspec.backends import torch as torch_backend
from megaspec.builders import LayerSpec
from megaspec.context import LayerContext
from megaspec.layers import BlockSequenceSpec, TransformerLayer
from megaspec.parallel import ParallelGroups
from megaspec.transformer_config import AttentionConfig, MlpConfig, TransformerConfig


class ParallelBlock(nn.Module):
    """A user's layer (e.g. GPT-J's parallel attention + MLP), whole-sequence only."""

    handles_sequence_parallel = False

    def __init__(
        self, *, config: TransformerConfig, groups: ParallelGroups, layer_index: int, scale: float = 1.0
    ) -> None:
        super().__init__()
        self.layer_index = layer_index
        self.scale = scale

    def forward(self, hidden: Tensor, *, context: LayerContext) -> Tensor:
        return hidden * self.scale


class ScaledTransformerLayer(TransformerLayer):
    """A subclass keeps the classmethod adapter."""


llama = torch_backend.llama_layer_submodules(
    AttentionConfig(num_heads=4), MlpConfig(ffn_hidden_size=128)
)
standard = TransformerLayer.as_layer_submodule(llama)
subclass = ScaledTransformerLayer.as_layer_submodule(llama)
own_class = LayerSpec(ParallelBlock)
own_class_with_setting = LayerSpec(functools.partial(ParallelBlock, scale=0.5))

hybrid = BlockSequenceSpec(pattern=[standard, own_class, subclass, own_class_with_setting], num_layers=8)
