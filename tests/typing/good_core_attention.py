"""Right: core attention classes that fit ``CoreAttentionBuilder``.

Covers ``bad_core_attention``: the built-in SDPA kernel, and a custom kernel (plain softmax
attention without grouped-query support) with the slot's constructor keywords and forward.
"""

from dataclasses import replace

import torch
from torch import Tensor, nn

from megaspec.backends import torch as torch_backend
from megaspec.context import LayerContext
from megaspec.layers import DotProductAttention
from megaspec.parallel import ParallelGroups
from megaspec.transformer_config import AttentionConfig, TransformerConfig


class EagerAttention(nn.Module):
    def __init__(
        self,
        *,
        config: TransformerConfig,
        attention: AttentionConfig,
        groups: ParallelGroups,
        layer_index: int,
    ) -> None:
        super().__init__()

    def forward(self, query: Tensor, key: Tensor, value: Tensor, *, context: LayerContext) -> Tensor:
        scores = query @ key.transpose(-2, -1) / query.shape[-1] ** 0.5  # [b, heads, s, s]
        return torch.softmax(scores, dim=-1) @ value


standard = torch_backend.attention_submodules()
sdpa = replace(standard, core_attention=DotProductAttention)
eager = replace(standard, core_attention=EagerAttention)
