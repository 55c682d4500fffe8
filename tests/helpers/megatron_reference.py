"""Megatron-core's GPTModel forward, written from its source, on a Megatron state dict (float64).

Megatron itself needs CUDA; this follows Megatron-core 0.19.2's code step by step for the
local spec at tensor-parallel size 1, so a CPU test can check that a converted state dict
means to Megatron what it means to megaspec:

* ``LanguageModelEmbedding``: ``word_embeddings(input_ids)`` then ``[b, s, h] -> [s, b, h]``.
* ``RotaryEmbedding``: ``dim = int(kv_channels * rotary_percent)``, inverse frequencies
  ``1 / base ** (arange(0, dim, 2) / dim)`` (Llama 3 rescaled with ``rope_scaling``),
  ``emb = cat(freqs, freqs)``; ``_apply_rotary_pos_emb_bshd`` rotates the first ``dim``
  dimensions, ``t * cos + rotate_half(t) * sin`` with ``rotate_half = cat(-x2, x1)``.
* ``SelfAttention.get_query_key_value_tensors``: ``linear_qkv`` output viewed as
  ``[s, b, groups, (heads / groups + 2) * head_dim]``, split ``[heads / groups * head_dim,
  head_dim, head_dim]``; ``q_layernorm`` / ``k_layernorm`` then RoPE; ``DotProductAttention``
  repeats each KV group over its query heads, scales by ``1 / sqrt(head_dim)``, causal mask.
* ``MLP``: ``linear_fc1``, then for a gated unit ``x_glu, x_linear = chunk(x, 2, -1)`` and
  ``activation(x_glu) * x_linear``, then ``linear_fc2``.
* ``TransformerBlock.final_layernorm``, then ``output_layer`` (or the shared embedding).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor

from megaspec.checkpoint import MegatronArguments
from megaspec.transformer_config import Llama3RotaryScaling


def _norm(hidden: Tensor, weights: Mapping[str, Tensor], prefix: str, arguments: MegatronArguments) -> Tensor:
    weight, eps = weights[prefix + "weight"], arguments.layernorm_epsilon
    if arguments.normalization == "RMSNorm":
        return hidden * torch.rsqrt(hidden.pow(2).mean(-1, keepdim=True) + eps) * weight
    return F.layer_norm(hidden, weight.shape, weight, weights[prefix + "bias"], eps)


def _linear(hidden: Tensor, weights: Mapping[str, Tensor], prefix: str) -> Tensor:
    output = hidden @ weights[prefix + "weight"].T
    return output + weights[prefix + "bias"] if prefix + "bias" in weights else output


def _rotary_frequencies(arguments: MegatronArguments, sequence: int) -> Tensor:
    """``RotaryEmbedding.get_emb``: ``[s, 1, 1, dim]``."""
    dim = arguments.head_dim
    if arguments.rotary_percent < 1.0:
        dim = int(dim * arguments.rotary_percent)
    inverse = 1.0 / (arguments.rotary_base ** (torch.arange(0, dim, 2, dtype=torch.float64) / dim))
    if arguments.rope_scaling:
        inverse = Llama3RotaryScaling(factor=arguments.rope_scaling_factor)(inverse)
    freqs = torch.outer(torch.arange(sequence, dtype=torch.float64), inverse)
    return torch.cat((freqs, freqs), dim=-1)[:, None, None, :]


def _rotate(t: Tensor, freqs: Tensor) -> Tensor:
    rot_dim = freqs.shape[-1]
    t, t_pass = t[..., :rot_dim], t[..., rot_dim:]
    x1, x2 = torch.chunk(t, 2, dim=-1)
    t = t * torch.cos(freqs) + torch.cat((-x2, x1), dim=-1) * torch.sin(freqs)
    return torch.cat((t, t_pass), dim=-1)


def _attention(
    hidden: Tensor, weights: Mapping[str, Tensor], prefix: str, arguments: MegatronArguments
) -> Tensor:
    sequence, batch = hidden.shape[:2]
    heads, groups, head_dim = arguments.num_attention_heads, arguments.query_groups, arguments.head_dim
    mixed = _linear(hidden, weights, prefix + "linear_qkv.")
    mixed = mixed.view(sequence, batch, groups, (heads // groups + 2) * head_dim)
    query, key, value = torch.split(mixed, [heads // groups * head_dim, head_dim, head_dim], dim=3)
    query = query.reshape(sequence, batch, -1, head_dim)  # [s, b, heads, head_dim]
    if arguments.qk_layernorm:
        query = _norm(query, weights, prefix + "q_layernorm.", arguments)
        key = _norm(key, weights, prefix + "k_layernorm.", arguments)
    if arguments.rotary:
        freqs = _rotary_frequencies(arguments, sequence)
        query, key = _rotate(query, freqs), _rotate(key, freqs)
    key = key.repeat_interleave(heads // groups, dim=2)
    value = value.repeat_interleave(heads // groups, dim=2)
    scores = torch.einsum("ibnd,jbnd->bnij", query, key) / math.sqrt(head_dim)
    future = torch.ones(sequence, sequence, dtype=torch.bool).triu(diagonal=1)
    probabilities = scores.masked_fill(future, float("-inf")).softmax(dim=-1)
    context = torch.einsum("bnij,jbnd->ibnd", probabilities, value).reshape(sequence, batch, -1)
    return _linear(context, weights, prefix + "linear_proj.")


def _mlp(hidden: Tensor, weights: Mapping[str, Tensor], prefix: str, arguments: MegatronArguments) -> Tensor:
    intermediate = _linear(hidden, weights, prefix + "linear_fc1.")
    if arguments.gated_linear_unit:
        x_glu, x_linear = torch.chunk(intermediate, 2, dim=-1)
        intermediate = arguments.activation_func(x_glu) * x_linear
    else:
        intermediate = arguments.activation_func(intermediate)
    return _linear(intermediate, weights, prefix + "linear_fc2.")


def megatron_logits(
    state_dict: Mapping[str, object], arguments: MegatronArguments, input_ids: Tensor
) -> Tensor:
    """Logits ``[batch, sequence, padded vocabulary]`` (float64) of a local-spec Megatron
    ``GPTModel`` with ``state_dict`` (tensor-parallel size 1) on ``input_ids [batch, sequence]``."""
    weights = {
        key: value.to(torch.float64)
        for key, value in state_dict.items()
        if isinstance(value, Tensor) and value.is_floating_point()
    }
    hidden = F.embedding(input_ids, weights["embedding.word_embeddings.weight"]).transpose(0, 1)
    for index in range(arguments.num_layers):
        prefix = f"decoder.layers.{index}."
        normed = _norm(hidden, weights, prefix + "input_layernorm.", arguments)
        hidden = hidden + _attention(normed, weights, prefix + "self_attention.", arguments)
        normed = _norm(hidden, weights, prefix + "pre_mlp_layernorm.", arguments)
        hidden = hidden + _mlp(normed, weights, prefix + "mlp.", arguments)
    hidden = _norm(hidden, weights, "decoder.final_layernorm.", arguments)
    output = weights.get("output_layer.weight", weights["embedding.word_embeddings.weight"])
    return (hidden @ output.T).transpose(0, 1)
