"""A Llama layer computed with plain torch ops in float64, from a layer's own weights.

:func:`reference_llama_layer` reads the weights of a ``TransformerLayer`` built from
``torch_backend.llama_layer_submodules`` (MHA, GQA, MQA, partial rotary, QK-norm, biases,
explicit head_dim) and computes what the layer should; :func:`randomise` first moves every
weight far from its initial value, so that each one matters to the comparison.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from megaspec.layers import TransformerLayer
from megaspec.transformer_config import AttentionConfig


def rms_norm(hidden: Tensor, weight: Tensor, eps: float) -> Tensor:
    return hidden * torch.rsqrt(hidden.pow(2).mean(dim=-1, keepdim=True) + eps) * weight


def rotate(hidden: Tensor, positions: Tensor, rotated_dims: int, base: float) -> Tensor:
    """RoPE, rotate-half pairing: dims ``i`` and ``i + rotated_dims / 2`` turn together.

    ``hidden [b, s, heads, head_dim]``, ``positions [b, s]``.
    """
    if rotated_dims == 0:
        return hidden
    half = rotated_dims // 2
    frequencies = base ** (-2.0 * torch.arange(half, dtype=torch.float64) / rotated_dims)
    angles = positions.to(torch.float64)[..., None, None] * frequencies  # [b, s, 1, half]
    cos, sin = angles.cos(), angles.sin()
    first, second = hidden[..., :half], hidden[..., half:rotated_dims]
    return torch.cat(
        (first * cos - second * sin, second * cos + first * sin, hidden[..., rotated_dims:]),
        dim=-1,
    )


def causal_attention(query: Tensor, key: Tensor, value: Tensor) -> Tensor:
    """Softmax attention by hand. ``query [b, s, heads, d]``, key/value the same shape."""
    head_dim = query.shape[-1]
    scores = torch.einsum("bihd,bjhd->bhij", query, key) / math.sqrt(head_dim)
    sequence = query.shape[1]
    future = torch.ones(sequence, sequence, dtype=torch.bool).triu(diagonal=1)
    weights = scores.masked_fill(future, float("-inf")).softmax(dim=-1)
    return torch.einsum("bhij,bjhd->bihd", weights, value)


def reference_llama_layer(
    layer: TransformerLayer,
    attention: AttentionConfig,
    hidden: Tensor,
    positions: Tensor,
    eps: float,
    *,
    per_group_packing: bool = True,
) -> Tensor:
    """The layer's math in float64 from its own weights. ``hidden [s, b, h] -> [s, b, h]``.

    ``per_group_packing=False`` reads the fused QKV as ``[all q; all k; all v]`` (the naive
    layout), to show that the test tells the two apart.
    """
    weights = {name: value.detach().to(torch.float64) for name, value in layer.named_parameters()}
    x = hidden.to(torch.float64).transpose(0, 1)  # [b, s, h]
    heads, groups = attention.num_heads, attention.query_groups
    head_dim = attention.resolved_head_dim(x.shape[-1])
    per_group = heads // groups

    normed = rms_norm(x, weights["input_norm.weight"], eps)
    qkv = normed @ weights["mixer.linear_qkv.weight"].T
    if "mixer.linear_qkv.bias" in weights:
        qkv = qkv + weights["mixer.linear_qkv.bias"]
    batch, sequence = qkv.shape[:2]
    if per_group_packing:
        # Rows per KV group g: [q heads g * per_group .. (g + 1) * per_group - 1, k_g, v_g].
        packed = qkv.view(batch, sequence, groups, per_group + 2, head_dim)
        query = packed[:, :, :, :per_group].reshape(batch, sequence, heads, head_dim)
        key, value = packed[:, :, :, per_group], packed[:, :, :, per_group + 1]
    else:
        query, key, value = torch.split(
            qkv, [heads * head_dim, groups * head_dim, groups * head_dim], dim=-1
        )
        query = query.reshape(batch, sequence, heads, head_dim)
        key = key.reshape(batch, sequence, groups, head_dim)
        value = value.reshape(batch, sequence, groups, head_dim)
    if "mixer.q_norm.weight" in weights:
        query = rms_norm(query, weights["mixer.q_norm.weight"], eps)
        key = rms_norm(key, weights["mixer.k_norm.weight"], eps)
    rotated_dims = int(head_dim * attention.rotary_fraction) // 2 * 2
    query = rotate(query, positions, rotated_dims, attention.rotary_base)
    key = rotate(key, positions, rotated_dims, attention.rotary_base)
    # Query head n reads KV group n // per_group.
    key = key.repeat_interleave(per_group, dim=2)
    value = value.repeat_interleave(per_group, dim=2)
    attended = causal_attention(query, key, value).reshape(batch, sequence, heads * head_dim)
    mixed = attended @ weights["mixer.linear_proj.weight"].T
    if "mixer.linear_proj.bias" in weights:
        mixed = mixed + weights["mixer.linear_proj.bias"]
    x = x + mixed

    normed = rms_norm(x, weights["pre_mlp_norm.weight"], eps)
    gate_weight, up_weight = weights["mlp.linear_fc1.weight"].chunk(2, dim=0)  # [gate; up]
    intermediate = F.silu(normed @ gate_weight.T) * (normed @ up_weight.T)
    x = x + intermediate @ weights["mlp.linear_fc2.weight"].T
    return x.transpose(0, 1)


def randomise(layer: nn.Module) -> None:
    """Weights far from their initial values, so every one of them matters."""
    with torch.no_grad():
        for name, parameter in layer.named_parameters():
            if name.endswith("norm.weight"):
                parameter.copy_(1.0 + 0.3 * torch.randn_like(parameter))
            elif parameter.dim() == 1:
                parameter.copy_(0.1 * torch.randn_like(parameter))
            else:
                parameter.copy_(torch.randn_like(parameter) / math.sqrt(parameter.shape[1]))
