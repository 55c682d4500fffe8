"""Right: mixers whose ``forward`` can be called as ``forward(hidden, context=context)``.

Covers ``bad_mixer_forward_args`` and ``bad_mixer_forward_return``: a keyword-only
``context``, a positional-or-keyword ``context`` (callable by keyword, so it fits), and an
extra argument with a default.
"""

from dataclasses import replace

from torch import Tensor, nn

from megaspec.backends import torch as torch_backend
from megaspec.context import LayerContext
from megaspec.parallel import ParallelGroups
from megaspec.transformer_config import AttentionConfig, MlpConfig, TransformerConfig


class MixerBase(nn.Module):
    handles_sequence_parallel = False

    def __init__(self, *, config: TransformerConfig, groups: ParallelGroups, layer_index: int) -> None:
        super().__init__()


class KeywordContextMixer(MixerBase):
    def forward(self, hidden: Tensor, *, context: LayerContext) -> Tensor:
        return hidden


class PositionalOrKeywordContextMixer(MixerBase):
    def forward(self, hidden: Tensor, context: LayerContext) -> Tensor:
        return hidden


class OptionalExtraArgumentMixer(MixerBase):
    def forward(self, hidden: Tensor, *, context: LayerContext, mask: Tensor | None = None) -> Tensor:
        return hidden if mask is None else hidden * mask


llama = torch_backend.llama_layer_submodules(
    AttentionConfig(num_heads=4), MlpConfig(ffn_hidden_size=128)
)
keyword = replace(llama, mixer=KeywordContextMixer)
positional_or_keyword = replace(llama, mixer=PositionalOrKeywordContextMixer)
optional_extra = replace(llama, mixer=OptionalExtraArgumentMixer)
