"""Wrong: mixers whose ``forward`` cannot be called as ``forward(hidden, context=context)``.

No ``context`` parameter, a renamed one (``ctx``), a positional-only one, and an extra
required argument the parent never passes are all rejected in the ``mixer`` slot.
"""

from dataclasses import replace

from torch import Tensor, nn

from megaspec.backends import torch as torch_backend
from megaspec.context import LayerContext
from megaspec.parallel import ParallelGroups
from megaspec.transformer_config import AttentionConfig, MlpConfig, TransformerConfig


class MixerBase(nn.Module):
    def __init__(self, *, config: TransformerConfig, groups: ParallelGroups, layer_index: int) -> None:
        super().__init__()


class NoContextMixer(MixerBase):
    def forward(self, hidden: Tensor) -> Tensor:
        return hidden


class RenamedContextMixer(MixerBase):
    def forward(self, hidden: Tensor, *, ctx: LayerContext) -> Tensor:
        return hidden


class PositionalOnlyContextMixer(MixerBase):
    def forward(self, hidden: Tensor, context: LayerContext, /) -> Tensor:
        return hidden


class ExtraArgumentMixer(MixerBase):
    def forward(self, hidden: Tensor, *, context: LayerContext, mask: Tensor) -> Tensor:
        return hidden


llama = torch_backend.llama_layer_submodules(
    AttentionConfig(num_heads=4), MlpConfig(ffn_hidden_size=128)
)
no_context = replace(llama, mixer=NoContextMixer)  # expect: arg-type
renamed = replace(llama, mixer=RenamedContextMixer)  # expect: arg-type
positional_only = replace(llama, mixer=PositionalOnlyContextMixer)  # expect: arg-type
extra_argument = replace(llama, mixer=ExtraArgumentMixer)  # expect: arg-type
