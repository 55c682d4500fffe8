"""Wrong: core attention classes that do not fit ``CoreAttentionBuilder``.

A Hugging Face-style kernel returning ``(output, weights)``, a kernel taking a mask instead
of the ``context`` keyword, and one whose ``__init__`` lacks the ``attention`` keyword.
"""

from dataclasses import replace

from torch import Tensor, nn

from megaspec.backends import torch as torch_backend
from megaspec.context import LayerContext
from megaspec.parallel import ParallelGroups
from megaspec.transformer_config import AttentionConfig, TransformerConfig


class CoreAttentionBase(nn.Module):
    def __init__(
        self,
        *,
        config: TransformerConfig,
        attention: AttentionConfig,
        groups: ParallelGroups,
        layer_index: int,
    ) -> None:
        super().__init__()


class WeightsReturningAttention(CoreAttentionBase):
    def forward(
        self, query: Tensor, key: Tensor, value: Tensor, *, context: LayerContext
    ) -> tuple[Tensor, Tensor]:
        return query, query


class MaskedAttention(CoreAttentionBase):
    def forward(self, query: Tensor, key: Tensor, value: Tensor, mask: Tensor) -> Tensor:
        return query


class NoAttentionConfigAttention(nn.Module):
    def __init__(self, *, config: TransformerConfig, groups: ParallelGroups, layer_index: int) -> None:
        super().__init__()

    def forward(self, query: Tensor, key: Tensor, value: Tensor, *, context: LayerContext) -> Tensor:
        return query


standard = torch_backend.attention_submodules()
returns_weights = replace(standard, core_attention=WeightsReturningAttention)  # expect: arg-type
takes_mask = replace(standard, core_attention=MaskedAttention)  # expect: arg-type
no_attention_config = replace(standard, core_attention=NoAttentionConfigAttention)  # expect: arg-type
