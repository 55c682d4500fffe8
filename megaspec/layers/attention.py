"""Self-attention: fused QKV packed per KV group, grouped-query attention, RoPE, QK-norm."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.checkpoint import checkpoint

from megaspec.builders import (
    ColumnLinear,
    ColumnLinearBuilder,
    CoreAttentionBuilder,
    MixerBuilder,
    Norm,
    NormBuilder,
    RowLinear,
    RowLinearBuilder,
)
from megaspec.context import LayerContext
from megaspec.inference import supports_inference_cache
from megaspec.layers.slots import building_slot
from megaspec.parallel import ParallelGroups, normal_init, ones_init, scaled_normal_init
from megaspec.rotary import rotary_dim, rotate
from megaspec.schema import ConfigError
from megaspec.transformer_config import AttentionConfig, TransformerConfig


class DotProductAttention(nn.Module):
    """Causal (or full) softmax attention on ``torch.nn.functional.scaled_dot_product_attention``.

    Fits :class:`~megaspec.builders.CoreAttentionBuilder` directly. Grouped-query attention
    uses SDPA's ``enable_gqa``, so keys and values are never copied per query head.

    Queries may be the last ``q`` of ``k`` keys (incremental decoding: keys from a cache), and
    ``context.attention_mask`` may mark padded keys; then it attends through an explicit mask
    (:func:`visible_keys`). A plain forward (no padding, as many queries as keys) keeps SDPA's
    ``is_causal`` path. It declares ``supports_inference_cache``.

    ``attention.sdpa_backend`` other than ``"auto"`` allows SDPA only that kernel
    (``torch.nn.attention.sdpa_kernel``); a call the kernel cannot run (wrong device, dtype or
    mask) raises PyTorch's ``RuntimeError`` instead of falling back to another kernel.
    """

    supports_inference_cache = True

    def __init__(
        self,
        *,
        config: TransformerConfig,
        attention: AttentionConfig,
        groups: ParallelGroups,
        layer_index: int,
    ) -> None:
        super().__init__()
        self.causal = attention.causal
        self.grouped = attention.query_groups != attention.num_heads
        self.sdpa_backend = attention.sdpa_backend
        self._kernels = None if attention.sdpa_backend == "auto" else [_SDPA_KERNELS[attention.sdpa_backend]]

    def forward(self, query: Tensor, key: Tensor, value: Tensor, *, context: LayerContext) -> Tensor:
        kernels = contextlib.nullcontext() if self._kernels is None else sdpa_kernel(self._kernels)
        with kernels:
            return self._attend(query, key, value, context)

    def extra_repr(self) -> str:
        return "" if self._kernels is None else f"sdpa_backend={self.sdpa_backend}"

    def _attend(self, query: Tensor, key: Tensor, value: Tensor, context: LayerContext) -> Tensor:
        query_length, key_length = query.shape[2], key.shape[2]
        padding = context.attention_mask
        if padding is None and query_length == key_length:
            return F.scaled_dot_product_attention(
                query, key, value, is_causal=self.causal, enable_gqa=self.grouped
            )
        if padding is None and (query_length == 1 or not self.causal):
            # One new token sees every cached key; nothing to mask.
            return F.scaled_dot_product_attention(query, key, value, enable_gqa=self.grouped)
        mask = visible_keys(query_length, key_length, padding, causal=self.causal, device=query.device)
        return F.scaled_dot_product_attention(
            query, key, value, attn_mask=mask, enable_gqa=self.grouped
        )


_SDPA_KERNELS: Mapping[str, SDPBackend] = {
    "flash": SDPBackend.FLASH_ATTENTION,
    "cudnn": SDPBackend.CUDNN_ATTENTION,
    "efficient": SDPBackend.EFFICIENT_ATTENTION,
    "math": SDPBackend.MATH,
}


def visible_keys(
    query_length: int,
    key_length: int,
    key_padding: Tensor | None,
    *,
    causal: bool,
    device: torch.device,
) -> Tensor:
    """Which keys each query may attend to: bool ``[batch or 1, 1, query_length, key_length]``.

    The queries are the last ``query_length`` of ``key_length`` positions (the first ones are
    cached), so query ``i`` sits at position ``key_length - query_length + i``. A causal query
    sees the keys up to its own position; ``key_padding`` (``[batch, key_length]``, ``True``
    for real tokens) hides padded keys. Every query also sees its own key, so that a padded
    query (which has no real key before it) gets a finite output on every SDPA backend; no
    real token ever reads it.

    Raises:
        ValueError: if ``key_padding`` does not have ``key_length`` columns, or there are more
            queries than keys.
    """
    if query_length > key_length:
        raise ValueError(f"visible_keys: {query_length} queries but only {key_length} keys")
    if key_padding is not None and key_padding.shape[-1] != key_length:
        raise ValueError(
            f"visible_keys: the attention mask covers {key_padding.shape[-1]} tokens, but there "
            f"are {key_length} keys (cached + this call's)"
        )
    query_positions = torch.arange(key_length - query_length, key_length, device=device)
    key_positions = torch.arange(key_length, device=device)
    own = key_positions == query_positions[:, None]  # [q, k]
    visible = key_positions <= query_positions[:, None] if causal else torch.ones_like(own)
    if key_padding is not None:
        visible = visible & key_padding.to(torch.bool)[:, None, None, :]  # [b, 1, q, k]
    else:
        visible = visible[None, None]
    return visible | own


def split_heads(
    qkv: Tensor,
    heads_per_group: int,
    q_norm: Norm | None,
    k_norm: Norm | None,
    rotary: tuple[Tensor, Tensor] | None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Queries ``[s, b, heads, d]``, keys and values ``[s, b, groups, d]`` of the fused QKV
    output ``[s, b, groups, heads_per_group + 2, d]``, with QK-norm and RoPE (``rotary``:
    ``(cos, sin)``) applied.

    Each result is a tensor of its own, never a view of ``qkv``: what attention keeps for
    the backward pass then does not hold the whole QKV output alive (for a 16-layer, hidden
    2048 model at 8192 tokens, about 1 GiB). Compiled (:func:`head_split`), it is one kernel
    forward and one backward, which writes the QKV gradient directly.
    """
    sequence, batch, groups, _, head_dim = qkv.shape
    # One split (its backward is one concatenation), not three indexing ops (whose
    # backward builds three zero-filled QKV-sized gradients and adds them).
    query, key, value = torch.split(qkv, [heads_per_group, 1, 1], dim=3)
    query = query.reshape(sequence, batch, groups * heads_per_group, head_dim)
    key, value = key.squeeze(3), value.squeeze(3)
    if q_norm is not None:
        query = q_norm(query)
    if k_norm is not None:
        key = k_norm(key)
    if rotary is not None:
        query, key = rotate(query, *rotary), rotate(key, *rotary)
    return query.contiguous(), key.contiguous(), value.contiguous()


HeadSplit = Callable[
    [Tensor, int, Norm | None, Norm | None, tuple[Tensor, Tensor] | None], tuple[Tensor, Tensor, Tensor]
]
""":func:`split_heads`'s signature."""

# Not ``fullgraph``: a user's QK-norm may hold code dynamo cannot trace (it then runs
# eagerly for that part). The norms are arguments, so every layer shares one graph.
_compiled_split_heads: HeadSplit = torch.compile(split_heads)


def head_split(fused: bool) -> HeadSplit:
    """:func:`split_heads`, compiled when ``fused`` (``TransformerConfig.fuse_elementwise``)."""
    return _compiled_split_heads if fused else split_heads


@dataclass(frozen=True)
class SelfAttentionSubmodules:
    """The slots of :class:`SelfAttention`. ``q_norm``/``k_norm`` set enable QK-norm."""

    linear_qkv: ColumnLinearBuilder
    core_attention: CoreAttentionBuilder
    linear_proj: RowLinearBuilder
    q_norm: NormBuilder | None = None
    k_norm: NormBuilder | None = None


class SelfAttention(nn.Module):
    """Multi-head self-attention, tensor-parallel over KV groups.

    The fused QKV projection's output rows are packed per KV group: for each group g,
    ``[q heads of g, k_g, v_g]``, each ``head_dim`` wide. A tensor-parallel rank therefore owns
    whole groups and their query heads as one contiguous slice of rows.

    Shapes: ``[s, b, hidden] -> [s, b, hidden]`` (``s / tp`` when sequence parallel).

    Raises:
        ValueError: for settings that do not fit the model width or the tensor-parallel size
            (see :meth:`AttentionConfig.check_model`), naming the layer and the field.
    """

    handles_sequence_parallel = True  # linear_qkv gathers the sequence, linear_proj splits it

    def __init__(
        self,
        *,
        config: TransformerConfig,
        attention: AttentionConfig,
        groups: ParallelGroups,
        layer_index: int,
        submodules: SelfAttentionSubmodules,
    ) -> None:
        super().__init__()
        owner = f"SelfAttention (layer {layer_index})"
        self.layer_index = layer_index
        tp = groups.tensor_size
        try:
            attention.check_model(config.hidden_size, tp)
        except ConfigError as error:
            raise ValueError(f"{owner}: {error}") from None
        self.head_dim = attention.resolved_head_dim(config.hidden_size)
        self.heads_per_group = attention.num_heads // attention.query_groups
        self.local_groups = attention.query_groups // tp
        self.local_heads = attention.num_heads // tp
        self.rotary_dim = rotary_dim(self.head_dim, attention.rotary_fraction)
        self.rotary_base = attention.rotary_base
        self.rotary_scaling = attention.rotary_scaling
        self.split_heads = head_split(config.fuse_elementwise)
        self.linear_qkv = self._build_qkv(submodules.linear_qkv, owner, config, attention, groups)
        self.q_norm = self._build_head_norm(submodules.q_norm, "q_norm", owner, config, groups)
        self.k_norm = self._build_head_norm(submodules.k_norm, "k_norm", owner, config, groups)
        with building_slot(
            owner=owner,
            slot="core_attention",
            builder=submodules.core_attention,
            interface=CoreAttentionBuilder,
        ) as slot:
            self.core_attention = slot.checked(
                submodules.core_attention(
                    config=config, attention=attention, groups=groups, layer_index=layer_index
                )
            )
        self.linear_proj = self._build_proj(submodules.linear_proj, owner, config, attention, groups)
        self.recompute_core_attention = attention.recompute_core_attention

    def _attend(self, query: Tensor, key: Tensor, value: Tensor, context: LayerContext) -> Tensor:
        if self.recompute_core_attention and torch.is_grad_enabled():
            # Non-reentrant: keeps only q, k, v (not e.g. the math kernel's [s, s] scores).
            attended: Tensor = checkpoint(
                lambda q, k, v: self.core_attention(q, k, v, context=context),
                query,
                key,
                value,
                use_reentrant=False,
            )
            return attended
        return self.core_attention(query, key, value, context=context)

    def _build_qkv(
        self,
        builder: ColumnLinearBuilder,
        owner: str,
        config: TransformerConfig,
        attention: AttentionConfig,
        groups: ParallelGroups,
    ) -> ColumnLinear:
        # Output rows packed per KV group: [q heads of g, k_g, v_g] for each group g.
        qkv_size = attention.query_groups * (self.heads_per_group + 2) * self.head_dim
        with building_slot(owner=owner, slot="linear_qkv", builder=builder, interface=ColumnLinearBuilder) as slot:
            return slot.checked(
                builder(
                    input_size=config.hidden_size,
                    output_size=qkv_size,
                    groups=groups,
                    init_method=normal_init(config.init_std),
                    bias=attention.bias,
                    gather_output=False,
                    sequence_parallel=config.sequence_parallel,
                    stacked_parts=1,
                    params_dtype=config.params_dtype,
                )
            )

    def _build_proj(
        self,
        builder: RowLinearBuilder,
        owner: str,
        config: TransformerConfig,
        attention: AttentionConfig,
        groups: ParallelGroups,
    ) -> RowLinear:
        with building_slot(owner=owner, slot="linear_proj", builder=builder, interface=RowLinearBuilder) as slot:
            return slot.checked(
                builder(
                    input_size=attention.num_heads * self.head_dim,
                    output_size=config.hidden_size,
                    groups=groups,
                    init_method=scaled_normal_init(config.init_std, config.num_layers),
                    bias=attention.bias,
                    input_is_parallel=True,
                    sequence_parallel=config.sequence_parallel,
                    params_dtype=config.params_dtype,
                )
            )

    def _build_head_norm(
        self,
        builder: NormBuilder | None,
        slot: str,
        owner: str,
        config: TransformerConfig,
        groups: ParallelGroups,
    ) -> Norm | None:
        if builder is None:
            return None
        # Each rank normalises its own heads: the shared scale's gradient is summed over ranks.
        with building_slot(owner=owner, slot=slot, builder=builder, interface=NormBuilder) as building:
            return building.checked(
                builder(
                    hidden_size=self.head_dim,
                    config=config,
                    groups=groups,
                    sharded_input=True,
                    init_method=ones_init(),
                )
            )

    @property
    def supports_inference_cache(self) -> bool:
        """Whether it may decode from a key/value cache: if its core attention declares it.

        A core attention that does declare it handles fewer queries than keys and
        ``context.attention_mask`` (see :class:`DotProductAttention`).
        """
        return supports_inference_cache(self.core_attention)

    @classmethod
    def as_mixer_submodule(
        cls, attention: AttentionConfig, submodules: SelfAttentionSubmodules
    ) -> MixerBuilder:
        """A :class:`~megaspec.builders.MixerBuilder` for self-attention with these settings."""

        def build(*, config: TransformerConfig, groups: ParallelGroups, layer_index: int) -> SelfAttention:
            return cls(
                config=config,
                attention=attention,
                groups=groups,
                layer_index=layer_index,
                submodules=submodules,
            )

        build.__qualname__ = f"{cls.__qualname__}.as_mixer_submodule(...)"
        return build

    def forward(self, hidden: Tensor, *, context: LayerContext) -> Tensor:
        qkv = self.linear_qkv(hidden)
        sequence, batch = qkv.shape[0], qkv.shape[1]
        # [s, b, groups, heads_per_group + 2, head_dim]: per group, its queries then k then v.
        qkv = qkv.view(sequence, batch, self.local_groups, self.heads_per_group + 2, self.head_dim)
        rotary = None
        if self.rotary_dim > 0:
            rotary = context.rotary.cos_sin(
                self.rotary_dim, self.rotary_base, qkv.dtype, self.rotary_scaling
            )
        query, key, value = self.split_heads(qkv, self.heads_per_group, self.q_norm, self.k_norm, rotary)
        # [s, b, n, d] -> [b, n, s, d] for the attention kernel, and back.
        query, key, value = (part.permute(1, 2, 0, 3) for part in (query, key, value))
        if context.inference is not None:
            # Keys are cached after RoPE: a cached key never needs its position again.
            key, value = context.inference.update_key_value(self.layer_index, key, value)
        attended = self._attend(query, key, value, context)
        attended = attended.permute(2, 0, 1, 3).reshape(sequence, batch, self.local_heads * self.head_dim)
        return self.linear_proj(attended)
