"""SelfAttention in a Llama layer, against the float64 reference of tests/helpers, and the
errors it raises for head sizes and rotary fractions it cannot build."""

from __future__ import annotations

import re
from dataclasses import replace

import pytest
import torch
from torch import Tensor

from megaspec.backends import torch as torch_backend
from megaspec.context import LayerContext
from megaspec.layers import BlockSequenceSpec, TransformerLayer
from megaspec.transformer_config import AttentionConfig, MlpConfig, TransformerConfig
from tests.helpers.layers import HIDDEN, SINGLE, build_gpt, build_layer
from tests.helpers.reference_llama import randomise, reference_llama_layer

MLP_CONFIG = MlpConfig(ffn_hidden_size=48)
MLP_SETTINGS = MlpConfig(ffn_hidden_size=64)


# --- the Llama layer against a reference written with plain torch ops ------------------------


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


# --- heads and rotary fractions that do not build --------------------------------------------


def test_hidden_size_not_divisible_by_heads() -> None:
    attention = AttentionConfig(num_heads=5)
    expected = "num_heads: 5 does not divide hidden_size (32); set head_dim"
    with pytest.raises(ValueError, match=re.escape(expected) + "$"):
        attention.resolved_head_dim(HIDDEN)
    with pytest.raises(ValueError, match=re.escape(expected) + "$"):
        build_layer(torch_backend.llama_layer_submodules(attention, MLP_CONFIG))
    # With an explicit head_dim the same heads build: 5 heads of 8 project 40 -> 32.
    layer = build_layer(
        torch_backend.llama_layer_submodules(replace(attention, head_dim=8), MLP_CONFIG)
    )
    assert layer.get_parameter("mixer.linear_proj.weight").shape == (HIDDEN, 40)


def test_head_divisibility_error_names_the_layer() -> None:
    attention = AttentionConfig(num_heads=5)
    with pytest.raises(ValueError) as error:
        build_gpt(BlockSequenceSpec(pattern=[torch_backend.llama_layer(attention, MLP_SETTINGS)], num_layers=1))
    assert str(error.value) == (
        "SelfAttention (layer 0): num_heads: 5 does not divide hidden_size (32); set head_dim"
    )


def test_rotary_fraction_rotating_nothing_is_an_error() -> None:
    attention = AttentionConfig(num_heads=4, head_dim=8, rotary_fraction=0.1)
    with pytest.raises(ValueError) as error:
        build_gpt(BlockSequenceSpec(pattern=[torch_backend.llama_layer(attention, MLP_SETTINGS)], num_layers=1))
    assert str(error.value) == (
        "SelfAttention (layer 0): rotary_fraction: 0.1 of head_dim 8 rotates no dimension; "
        "use 0 to disable RoPE"
    )
