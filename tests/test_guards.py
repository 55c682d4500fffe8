"""Run-time guards and the numerical reference of the library, on one process.

- Builders that return a non-module, and children whose output has the wrong type or
  shape, fail with a message naming the slot and the builder.
- Layer counts and patterns are validated (a spec is never silently replicated).
- Config validation errors and vocabulary padding.
- A Llama-spec ``TransformerLayer`` equals a reference written here with plain torch ops from
  the layer's own weights (MHA, GQA, MQA, partial rotary, QK-norm, biases, explicit head_dim).
"""

from __future__ import annotations

import functools
import math
import re
from dataclasses import replace
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from megaspec.backends import torch as torch_backend
from megaspec.context import LayerContext
from megaspec.layers import (
    BlockSequence,
    BlockSequenceSpec,
    SelfAttention,
    TransformerLayer,
    TransformerLayerSubmodules,
    describe_builder,
)
from megaspec.models import GPTModel
from megaspec.parallel import ParallelGroups
from megaspec.transformer_config import AttentionConfig, MlpConfig, TransformerConfig

HIDDEN = 32
SINGLE = ParallelGroups.single()
ATTENTION = AttentionConfig(num_heads=4)
MLP_CONFIG = MlpConfig(ffn_hidden_size=48)


# --- children used by the guard tests ------------------------------------------------------


class IdentityMixer(nn.Module):
    def __init__(
        self, *, config: TransformerConfig, groups: ParallelGroups, layer_index: int
    ) -> None:
        super().__init__()

    def forward(self, hidden: Tensor, *, context: LayerContext) -> Tensor:
        return hidden


class NarrowingMixer(IdentityMixer):
    """Drops the last feature: ``[s, b, h] -> [s, b, h - 1]``."""

    def forward(self, hidden: Tensor, *, context: LayerContext) -> Tensor:
        return hidden[..., :-1]


class TupleMixer(IdentityMixer):
    """Returns ``(output, weights)`` like ``torch.nn.MultiheadAttention``."""

    def forward(self, hidden: Tensor, *, context: LayerContext) -> Any:
        return hidden, None


class TokenDroppingMlp(nn.Module):
    """Drops the last ``drop`` tokens: ``[s, b, h] -> [s - drop, b, h]``."""

    def __init__(
        self, *, config: TransformerConfig, groups: ParallelGroups, layer_index: int, drop: int
    ) -> None:
        super().__init__()
        self.drop = drop

    def forward(self, hidden: Tensor) -> Tensor:
        return hidden[: -self.drop]


class ListMlp(nn.Module):
    def __init__(
        self, *, config: TransformerConfig, groups: ParallelGroups, layer_index: int
    ) -> None:
        super().__init__()

    def forward(self, hidden: Tensor) -> Any:
        return [hidden]


class IndexedLayer(nn.Module):
    """An identity layer that remembers its ``layer_index`` and its builder's tag."""

    def __init__(
        self, *, config: TransformerConfig, groups: ParallelGroups, layer_index: int, tag: str = ""
    ) -> None:
        super().__init__()
        self.layer_index = layer_index
        self.tag = tag

    def forward(self, hidden: Tensor, *, context: LayerContext) -> Tensor:
        return hidden


def lambda_mixer(*, config: TransformerConfig, groups: ParallelGroups, layer_index: int) -> Any:
    return lambda hidden, *, context: hidden


def int_mixer(*, config: TransformerConfig, groups: ParallelGroups, layer_index: int) -> Any:
    return 3


def bare_module_mixer(
    *, config: TransformerConfig, groups: ParallelGroups, layer_index: int
) -> Any:
    return nn.Module()


def int_layer(*, config: TransformerConfig, groups: ParallelGroups, layer_index: int) -> Any:
    return 3


def int_linear(**keywords: Any) -> Any:
    return 3


def sequence_config(num_layers: int) -> TransformerConfig:
    return TransformerConfig(hidden_size=HIDDEN, num_layers=num_layers)


def context_for(sequence: int, batch: int) -> LayerContext:
    return LayerContext.for_positions(torch.arange(sequence).expand(batch, sequence))


def llama_with(**slots: Any) -> TransformerLayerSubmodules:
    return replace(torch_backend.llama_layer_submodules(ATTENTION, MLP_CONFIG), **slots)


def build_layer(submodules: TransformerLayerSubmodules, layer_index: int = 0) -> TransformerLayer:
    config = TransformerConfig(hidden_size=HIDDEN, num_layers=1)
    return TransformerLayer(
        config=config, groups=SINGLE, layer_index=layer_index, submodules=submodules
    )


def run_layer(layer: TransformerLayer) -> Tensor:
    output: Tensor = layer(torch.randn(6, 2, HIDDEN), context=context_for(6, 2))
    return output


# --- builders returning a non-module ---------------------------------------------------------


@pytest.mark.parametrize(
    ("builder", "returned"), [(lambda_mixer, "function"), (int_mixer, "int")]
)
def test_mixer_builder_returning_non_module(builder: Any, returned: str) -> None:
    expected = (
        f"TransformerLayer (layer 3): builder {builder.__name__} for slot 'mixer' returned "
        f"{returned}, expected a torch.nn.Module"
    )
    with pytest.raises(TypeError, match=re.escape(expected) + "$"):
        build_layer(llama_with(mixer=builder), layer_index=3)


def test_mixer_builder_returning_module_without_forward() -> None:
    with pytest.raises(TypeError) as error:
        build_layer(llama_with(mixer=bare_module_mixer))
    assert str(error.value) == (
        "TransformerLayer (layer 0): builder bare_module_mixer for slot 'mixer' returned "
        "Module, which defines no forward"
    )


def test_attention_child_builder_returning_non_module() -> None:
    submodules = replace(torch_backend.attention_submodules(), linear_qkv=int_linear)
    with pytest.raises(TypeError) as error:
        build_layer(llama_with(mixer=SelfAttention.as_mixer_submodule(ATTENTION, submodules)))
    assert str(error.value) == (
        "SelfAttention (layer 0): builder int_linear for slot 'linear_qkv' returned int, "
        "expected a torch.nn.Module"
    )


def test_layer_builder_returning_non_module() -> None:
    spec = BlockSequenceSpec(pattern=[IndexedLayer, int_layer], num_layers=2)
    with pytest.raises(TypeError) as error:
        BlockSequence(config=sequence_config(2), groups=SINGLE, spec=spec)
    assert str(error.value) == (
        "BlockSequence: builder int_layer for slot 'layers[1]' returned int, "
        "expected a torch.nn.Module"
    )


# --- children returning the wrong thing --------------------------------------------------------


def test_mixer_with_wrong_output_shape() -> None:
    layer = build_layer(llama_with(mixer=NarrowingMixer), layer_index=2)
    with pytest.raises(ValueError) as error:
        run_layer(layer)
    assert str(error.value) == (
        "TransformerLayer (layer 2): slot 'mixer' (built by NarrowingMixer) returned shape "
        "(6, 2, 31), expected (6, 2, 32)"
    )


def test_mixer_returning_non_tensor() -> None:
    layer = build_layer(llama_with(mixer=TupleMixer))
    with pytest.raises(TypeError) as error:
        run_layer(layer)
    assert str(error.value) == (
        "TransformerLayer (layer 0): slot 'mixer' (built by TupleMixer) returned tuple, "
        "expected a Tensor"
    )


def test_mlp_with_wrong_output_shape() -> None:
    dropping = functools.partial(TokenDroppingMlp, drop=2)
    layer = build_layer(llama_with(mixer=IdentityMixer, mlp=dropping))
    with pytest.raises(ValueError) as error:
        run_layer(layer)
    assert str(error.value) == (
        "TransformerLayer (layer 0): slot 'mlp' (built by functools.partial(TokenDroppingMlp, "
        "drop=2)) returned shape (4, 2, 32), expected (6, 2, 32)"
    )


def test_mlp_returning_non_tensor() -> None:
    layer = build_layer(llama_with(mlp=ListMlp))
    with pytest.raises(TypeError) as error:
        run_layer(layer)
    assert str(error.value) == (
        "TransformerLayer (layer 0): slot 'mlp' (built by ListMlp) returned list, expected a Tensor"
    )


def test_standard_builders_are_named_readably() -> None:
    # The names that guard messages use for the library's own adapters.
    llama = torch_backend.llama_layer_submodules(ATTENTION, MLP_CONFIG)
    assert describe_builder(llama.mixer) == "SelfAttention.as_mixer_submodule(...)"
    assert describe_builder(llama.mlp) == "MLP.as_mlp_submodule(...)"
    assert describe_builder(llama.input_norm) == "RMSNorm"
    layer = TransformerLayer.as_layer_submodule(llama)
    assert describe_builder(layer) == "TransformerLayer.as_layer_submodule(...)"
    assert describe_builder(functools.partial(IndexedLayer, tag="a")) == (
        "functools.partial(IndexedLayer, tag='a')"
    )


# --- block sequences ------------------------------------------------------------------------


def indexed(tag: str) -> Any:
    return functools.partial(IndexedLayer, tag=tag)


def test_num_layers_not_a_multiple_of_pattern() -> None:
    a, c = indexed("a"), indexed("c")
    for num_layers in (7, 0, -3):
        with pytest.raises(ValueError) as error:
            BlockSequenceSpec(pattern=[a, a, c], num_layers=num_layers)
        assert str(error.value) == (
            f"BlockSequenceSpec: num_layers ({num_layers}) must be a positive multiple of the "
            f"pattern's length (3 layers); write the pattern out in full instead of relying on "
            f"a partial repeat"
        )


def test_empty_pattern() -> None:
    with pytest.raises(ValueError, match=re.escape("BlockSequenceSpec: pattern is empty") + "$"):
        BlockSequenceSpec(pattern=[], num_layers=4)


def test_spec_never_replicated_to_config_num_layers() -> None:
    # One layer spec and a 24-layer config: an error, not 24 copies.
    layer = torch_backend.llama_layer(ATTENTION, MLP_CONFIG)
    spec = BlockSequenceSpec(pattern=[layer], num_layers=1)
    with pytest.raises(ValueError) as error:
        GPTModel(
            config=TransformerConfig(hidden_size=HIDDEN, num_layers=24),
            vocab_size=128,
            submodules=torch_backend.gpt_submodules(spec),
        )
    assert str(error.value) == (
        "BlockSequence: the block spec builds 1 layers but config.num_layers is 24"
    )


def test_nested_spec_counts_its_layers() -> None:
    a, c = indexed("a"), indexed("c")
    inner = BlockSequenceSpec(pattern=[a, c], num_layers=4)  # a c a c
    with pytest.raises(ValueError) as error:
        BlockSequenceSpec(pattern=[inner, a], num_layers=6)
    assert "num_layers (6) must be a positive multiple of the pattern's length (5 layers)" in str(
        error.value
    )
    outer = BlockSequenceSpec(pattern=[inner, a], num_layers=10)
    assert outer.pattern_length == 5
    with pytest.raises(ValueError) as error:
        BlockSequence(config=sequence_config(5), groups=SINGLE, spec=outer)
    assert str(error.value) == (
        "BlockSequence: the block spec builds 10 layers but config.num_layers is 5"
    )
    blocks = BlockSequence(config=sequence_config(10), groups=SINGLE, spec=outer)
    assert [layer.tag for layer in blocks.layers] == list("acacaacaca")
    assert [layer.layer_index for layer in blocks.layers] == list(range(10))


# --- configs ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda: TransformerConfig(hidden_size=0, num_layers=2),
         "TransformerConfig.hidden_size must be positive, got 0"),
        (lambda: TransformerConfig(hidden_size=32, num_layers=-1),
         "TransformerConfig.num_layers must be positive, got -1"),
        (lambda: TransformerConfig(hidden_size=32, num_layers=2, norm_epsilon=0.0),
         "TransformerConfig.norm_epsilon must be positive, got 0.0"),
        (lambda: TransformerConfig(hidden_size=32, num_layers=2, init_std=-0.02),
         "TransformerConfig.init_std must be positive, got -0.02"),
        (lambda: AttentionConfig(num_heads=0),
         "AttentionConfig.num_heads must be positive, got 0"),
        (lambda: AttentionConfig(num_heads=4, rotary_base=0.0),
         "AttentionConfig.rotary_base must be positive, got 0.0"),
        (lambda: AttentionConfig(num_heads=8, num_query_groups=3),
         "AttentionConfig.num_query_groups (3) must be positive and divide num_heads (8)"),
        (lambda: AttentionConfig(num_heads=8, num_query_groups=0),
         "AttentionConfig.num_query_groups (0) must be positive and divide num_heads (8)"),
        (lambda: AttentionConfig(num_heads=8, num_query_groups=16),
         "AttentionConfig.num_query_groups (16) must be positive and divide num_heads (8)"),
        (lambda: AttentionConfig(num_heads=4, rotary_fraction=1.5),
         "AttentionConfig.rotary_fraction must lie in [0, 1], got 1.5"),
        (lambda: AttentionConfig(num_heads=4, rotary_fraction=-0.25),
         "AttentionConfig.rotary_fraction must lie in [0, 1], got -0.25"),
        (lambda: MlpConfig(ffn_hidden_size=0),
         "MlpConfig.ffn_hidden_size must be positive, got 0"),
    ],
)
def test_config_validation(make: Any, expected: str) -> None:
    with pytest.raises(ValueError, match=re.escape(expected) + "$"):
        make()


def test_hidden_size_not_divisible_by_heads() -> None:
    attention = AttentionConfig(num_heads=5)
    expected = (
        "hidden_size (32) is not divisible by num_heads (5); set AttentionConfig.head_dim "
        "explicitly"
    )
    with pytest.raises(ValueError, match=re.escape(expected) + "$"):
        attention.resolved_head_dim(HIDDEN)
    with pytest.raises(ValueError, match=re.escape(expected) + "$"):
        build_layer(torch_backend.llama_layer_submodules(attention, MLP_CONFIG))
    # With an explicit head_dim the same heads build: 5 heads of 8 project 40 -> 32.
    layer = build_layer(
        torch_backend.llama_layer_submodules(replace(attention, head_dim=8), MLP_CONFIG)
    )
    assert layer.get_parameter("mixer.linear_proj.weight").shape == (HIDDEN, 40)


# --- vocabulary padding -------------------------------------------------------------------------


@pytest.mark.parametrize("tie_embeddings", [False, True])
def test_vocab_padding(tie_embeddings: bool) -> None:
    torch.manual_seed(0)
    model = GPTModel(
        config=TransformerConfig(hidden_size=HIDDEN, num_layers=1),
        vocab_size=300,
        submodules=torch_backend.llama_submodules(ATTENTION, MLP_CONFIG, 1),
        tie_embeddings=tie_embeddings,
    )
    assert model.padded_vocab_size == 384
    assert (
        "  note: vocabulary 300 padded to 384 (a multiple of tensor-parallel size 1 x 128); "
        "padded entries are excluded from logits and loss"
    ) in model.summary()
    embedding = model.get_parameter("embedding.weight")
    assert embedding.shape == (384, HIDDEN)
    assert torch.count_nonzero(embedding[300:]) == 0
    assert torch.count_nonzero(embedding[:300]) == 300 * HIDDEN
    if not tie_embeddings:
        assert torch.count_nonzero(model.get_parameter("output_layer.weight")[300:]) == 0

    tokens = torch.randint(0, 300, (2, 9))
    tokens[0, -1] = 299  # the last real entry
    labels = tokens[:, 1:].clone()
    labels[1, 2] = -100
    logits = model(tokens[:, :-1])
    assert logits.shape == (2, 8, 300)
    losses = model(tokens[:, :-1], labels=labels)
    assert losses.shape == (2, 8) and losses.dtype == torch.float32
    expected = F.cross_entropy(
        logits.reshape(-1, 300), labels.reshape(-1), reduction="none"
    ).reshape(2, 8)
    torch.testing.assert_close(losses, expected, rtol=0, atol=1e-6)
    assert losses[1, 2] == 0

    # Padded entries take no part in training either: their gradients are zero.
    losses.mean().backward()
    grad = embedding.grad
    assert grad is not None and torch.count_nonzero(grad[300:]) == 0
    if not tie_embeddings:
        output_grad = model.get_parameter("output_layer.weight").grad
        assert output_grad is not None and torch.count_nonzero(output_grad[300:]) == 0


def test_no_padding_note_when_vocab_is_a_multiple() -> None:
    model = GPTModel(
        config=TransformerConfig(hidden_size=HIDDEN, num_layers=1),
        vocab_size=256,
        submodules=torch_backend.llama_submodules(ATTENTION, MLP_CONFIG, 1),
    )
    assert model.padded_vocab_size == 256
    assert "padded" not in model.summary()


# --- the Llama layer against a reference written with plain torch ops -----------------------------


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


LLAMA_CASES = {
    "mha": (AttentionConfig(num_heads=4), False),
    "gqa": (AttentionConfig(num_heads=8, num_query_groups=2), False),
    "mqa": (AttentionConfig(num_heads=4, num_query_groups=1), False),
    "partial_rotary": (
        AttentionConfig(num_heads=4, num_query_groups=2, rotary_fraction=0.5), False
    ),
    "qk_norm": (AttentionConfig(num_heads=4, num_query_groups=2), True),
    "gqa_rotary_qk_norm_bias": (
        AttentionConfig(
            num_heads=8, num_query_groups=4, rotary_fraction=0.5, rotary_base=500.0, bias=True
        ),
        True,
    ),
    "explicit_head_dim": (AttentionConfig(num_heads=4, num_query_groups=2, head_dim=12), False),
    "no_rotary": (AttentionConfig(num_heads=4, rotary_fraction=0.0), False),
}


def llama_layer_and_input(
    attention: AttentionConfig, qk_norm: bool
) -> tuple[TransformerLayer, Tensor, Tensor, float]:
    torch.manual_seed(0)
    config = TransformerConfig(hidden_size=HIDDEN, num_layers=2, norm_epsilon=1e-6)
    layer = TransformerLayer(
        config=config,
        groups=SINGLE,
        layer_index=1,
        submodules=torch_backend.llama_layer_submodules(attention, MLP_CONFIG, qk_norm=qk_norm),
    )
    randomise(layer)
    hidden = torch.randn(7, 2, HIDDEN)  # [s, b, h]
    positions = torch.arange(7) + torch.tensor([[0], [5]])  # [b, s]; row 1 starts at 5
    return layer, hidden, positions, config.norm_epsilon


@pytest.mark.parametrize("case", list(LLAMA_CASES))
def test_llama_layer_matches_reference(case: str) -> None:
    attention, qk_norm = LLAMA_CASES[case]
    layer, hidden, positions, eps = llama_layer_and_input(attention, qk_norm)
    assert hasattr(layer.mixer, "q_norm") and (layer.mixer.q_norm is not None) == qk_norm
    output = layer(hidden, context=LayerContext.for_positions(positions))
    assert output.dtype == torch.float32
    expected = reference_llama_layer(layer, attention, hidden, positions, eps)
    torch.testing.assert_close(output.to(torch.float64), expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("case", ["mha", "gqa", "qk_norm"])
def test_reference_rejects_naive_qkv_packing(case: str) -> None:
    # The naive [all q; all k; all v] reading gives different numbers whenever there is more
    # than one KV group (with one group, as in multi-query attention, the layouts coincide).
    attention, qk_norm = LLAMA_CASES[case]
    layer, hidden, positions, eps = llama_layer_and_input(attention, qk_norm)
    output = layer(hidden, context=LayerContext.for_positions(positions)).to(torch.float64)
    naive = reference_llama_layer(
        layer, attention, hidden, positions, eps, per_group_packing=False
    )
    assert (output - naive).abs().max() > 1e-2


def test_llama_layer_uses_relative_positions() -> None:
    # RoPE makes attention depend on position differences only: shifting every position
    # changes nothing (up to float32 rounding), spreading them apart changes the output.
    attention, qk_norm = LLAMA_CASES["mha"]
    layer, hidden, positions, _ = llama_layer_and_input(attention, qk_norm)
    output = layer(hidden, context=LayerContext.for_positions(positions))
    shifted = layer(hidden, context=LayerContext.for_positions(positions + 3))
    spread = layer(hidden, context=LayerContext.for_positions(positions * 2))
    torch.testing.assert_close(shifted, output, rtol=0, atol=1e-5)
    assert (output - spread).abs().max() > 1e-2
