"""Wrong: a mixer in a block pattern, even one that stores ``layer_index``.

A mixer's forward is a layer's forward, and many mixers store ``self.layer_index`` as
Megatron's and Hugging Face's do, so no structural Protocol can tell them apart. A pattern
therefore holds ``LayerSpec`` values, which only layer builders make: a mixer class, a
partial of one, or a mixer builder function is rejected, and so is a layer builder that was
not wrapped.
"""

import functools

from torch import Tensor, nn

from megaspec.backends import torch as torch_backend
from megaspec.context import LayerContext
from megaspec.layers import BlockSequenceSpec, TransformerLayer
from megaspec.parallel import ParallelGroups
from megaspec.transformer_config import AttentionConfig, MlpConfig, TransformerConfig


class IndexedMixer(nn.Module):
    """A mixer that remembers its layer index and has an extra setting."""

    handles_sequence_parallel = False

    def __init__(
        self, *, config: TransformerConfig, groups: ParallelGroups, layer_index: int, width: int = 4
    ) -> None:
        super().__init__()
        self.layer_index = layer_index
        self.width = width

    def forward(self, hidden: Tensor, *, context: LayerContext) -> Tensor:
        return hidden


def indexed_mixer(*, config: TransformerConfig, groups: ParallelGroups, layer_index: int) -> IndexedMixer:
    return IndexedMixer(config=config, groups=groups, layer_index=layer_index)


def transformer_layer(*, config: TransformerConfig, groups: ParallelGroups, layer_index: int) -> TransformerLayer:
    submodules = torch_backend.llama_layer_submodules(
        AttentionConfig(num_heads=4), MlpConfig(ffn_hidden_size=128)
    )
    return TransformerLayer(config=config, groups=groups, layer_index=layer_index, submodules=submodules)


mixer_class = BlockSequenceSpec(pattern=[IndexedMixer], num_layers=2)  # expect: list-item
mixer_partial = BlockSequenceSpec(pattern=[functools.partial(IndexedMixer, width=8)], num_layers=2)  # expect: list-item
mixer_function = BlockSequenceSpec(pattern=[indexed_mixer], num_layers=2)  # expect: list-item
unwrapped_layer = BlockSequenceSpec(pattern=[transformer_layer], num_layers=2)  # expect: list-item
