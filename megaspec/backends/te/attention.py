"""Core attention on Transformer Engine's fused kernels (cuDNN / flash attention).

:class:`TEDotProductAttention` fits :class:`~megaspec.builders.CoreAttentionBuilder`.
Self-attention has already applied RoPE (and QK-norm) to queries and keys before the core
attention slot, so Transformer Engine gets plain heads and no rotary embedding.
"""

from __future__ import annotations

from torch import Tensor, nn

from megaspec.backends.te._engine import te_pytorch
from megaspec.context import LayerContext
from megaspec.parallel import ParallelGroups
from megaspec.transformer_config import AttentionConfig, TransformerConfig


class TEDotProductAttention(nn.Module):
    """``te.pytorch.DotProductAttention`` (causal or full, grouped-query) over this rank's heads.

    ``forward``: query ``[b, heads, s, head_dim]``, key and value ``[b, query_groups, s,
    head_dim]`` -> ``[b, heads, s, head_dim]``, as :class:`~megaspec.builders.CoreAttention`
    says. Transformer Engine picks its backend (cuDNN fused attention or flash attention);
    ``NVTE_FUSED_ATTN`` / ``NVTE_FLASH_ATTN`` steer it.

    It does not declare ``supports_inference_cache``: decoding from a cache or with padded
    rows needs the torch backend's core attention.

    Raises:
        ValueError: in ``forward``, for a padding mask or fewer queries than keys.
    """

    def __init__(
        self,
        *,
        config: TransformerConfig,
        attention: AttentionConfig,
        groups: ParallelGroups,
        layer_index: int,
    ) -> None:
        super().__init__()
        self.head_dim = attention.resolved_head_dim(config.hidden_size)
        self.local_heads = attention.num_heads // groups.tensor_size
        self.te_module = te_pytorch.DotProductAttention(
            attention.num_heads,
            self.head_dim,
            num_gqa_groups=attention.query_groups,
            attention_dropout=0.0,
            qkv_format="sbhd",
            attn_mask_type="causal" if attention.causal else "no_mask",
            tp_size=groups.tensor_size,
            tp_group=groups.tensor,
            layer_number=layer_index + 1,  # Transformer Engine counts layers from 1
        )

    def forward(self, query: Tensor, key: Tensor, value: Tensor, *, context: LayerContext) -> Tensor:
        batch, _, sequence, _ = query.shape
        if context.attention_mask is not None or key.shape[2] != sequence:
            raise ValueError(
                "TEDotProductAttention: padded rows and key/value caches are not supported; "
                "use megaspec.layers.DotProductAttention for generation"
            )
        # [b, n, s, d] -> [s, b, n, d] ("sbhd"); contiguous, as the fused kernels expect.
        query, key, value = (part.permute(2, 0, 1, 3).contiguous() for part in (query, key, value))
        attended: Tensor = self.te_module(query, key, value)  # [s, b, heads * head_dim]
        # [s, b, n * d] -> [b, n, s, d]
        return attended.reshape(sequence, batch, self.local_heads, self.head_dim).permute(1, 2, 0, 3)
