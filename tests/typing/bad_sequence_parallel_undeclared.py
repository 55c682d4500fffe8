"""Wrong: a mixer, an MLP or a layer that does not say whether it takes sequence shards.

Under sequence parallelism each rank holds a slice of the sequence. A child that declares
``handles_sequence_parallel = True`` takes that slice; one that declares ``False`` is given
the whole sequence by its parent. A child that declares nothing would be handed a slice it
may not expect and compute something silently different, so mypy rejects it, and a
declaration that is not a bool.
"""

from dataclasses import replace

from torch import Tensor, nn

from megaspec.backends import torch as torch_backend
from megaspec.builders import LayerSpec
from megaspec.context import LayerContext
from megaspec.parallel import ParallelGroups
from megaspec.transformer_config import AttentionConfig, MlpConfig, TransformerConfig


class UndeclaredMixer(nn.Module):
    def __init__(self, *, config: TransformerConfig, groups: ParallelGroups, layer_index: int) -> None:
        super().__init__()

    def forward(self, hidden: Tensor, *, context: LayerContext) -> Tensor:
        return hidden


class UndeclaredMlp(nn.Module):
    def __init__(self, *, config: TransformerConfig, groups: ParallelGroups, layer_index: int) -> None:
        super().__init__()

    def forward(self, hidden: Tensor) -> Tensor:
        return hidden


class TextDeclaredMixer(UndeclaredMixer):
    handles_sequence_parallel = "no"


llama = torch_backend.llama_layer_submodules(
    AttentionConfig(num_heads=4), MlpConfig(ffn_hidden_size=128)
)
mixer = replace(llama, mixer=UndeclaredMixer)  # expect: arg-type
mlp = replace(llama, mlp=UndeclaredMlp)  # expect: arg-type
text = replace(llama, mixer=TextDeclaredMixer)  # expect: arg-type
layer = LayerSpec(UndeclaredMixer)  # expect: arg-type
