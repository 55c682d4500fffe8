"""SelfAttention in a Llama layer, against the float64 reference of tests/helpers; decoding
from its key/value cache and with left-padded rows, against its own full forward; and the
errors it raises for head sizes and rotary fractions it cannot build."""

from __future__ import annotations

import re
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from megaspec.backends import torch as torch_backend
from megaspec.context import LayerContext
from megaspec.inference import InferenceState, supports_inference_cache
from megaspec.layers import BlockSequenceSpec, SelfAttention, TransformerLayer
from megaspec.layers.attention import DotProductAttention, visible_keys
from megaspec.parallel import ParallelGroups
from megaspec.transformer_config import AttentionConfig, MlpConfig, SdpaBackend, TransformerConfig
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


# --- incremental decoding: keys and values from a cache, padded keys masked ------------------


@pytest.mark.parametrize("case", list(LLAMA_CASES))
def test_cached_decoding_matches_the_full_forward(case: str) -> None:
    # A prefill of 3 tokens, two single tokens, then a chunk of 2: every call attends over
    # the cached keys (stored after RoPE) and its own, with the causal offset of the cache.
    attention, qk_norm = LLAMA_CASES[case]
    layer, hidden, positions, _ = llama_layer_and_input(attention, qk_norm)
    full = layer(hidden, context=LayerContext.for_positions(positions))
    state = InferenceState(max_length=7)
    outputs = []
    for start, end in ((0, 3), (3, 4), (4, 5), (5, 7)):
        context = LayerContext.for_positions(positions[:, start:end], inference=state)
        outputs.append(layer(hidden[start:end], context=context))
        state.advance(end - start)
    torch.testing.assert_close(torch.cat(outputs), full, rtol=0, atol=1e-5)
    head_dim = attention.resolved_head_dim(HIDDEN)
    cache = state.key_value_caches[1]  # keyed by the layer's index
    assert cache.keys.shape == (2, attention.query_groups, 7, head_dim)


def padded_row_case() -> tuple[TransformerLayer, Tensor, Tensor, Tensor, Tensor]:
    """Row 0: 7 real tokens; row 1: 3 padding positions (garbage hidden states), then 4."""
    layer, hidden, _, _ = llama_layer_and_input(*LLAMA_CASES["gqa_rotary_qk_norm_bias"])
    real = torch.ones(2, 7, dtype=torch.bool)
    real[1, :3] = False
    hidden = hidden.clone()
    hidden[:3, 1] = 100 * torch.randn(3, HIDDEN)
    # Positions as GPTModel counts them: from 0 at a row's first real token, padding at 0.
    positions = torch.tensor([[0, 1, 2, 3, 4, 5, 6], [0, 0, 0, 0, 1, 2, 3]])
    alone = layer(hidden[3:, 1:], context=LayerContext.for_positions(torch.arange(4)[None]))
    return layer, hidden, real, positions, alone


def test_padded_keys_are_hidden_from_real_tokens() -> None:
    layer, hidden, real, positions, alone = padded_row_case()
    context = LayerContext.for_positions(positions, attention_mask=real)
    output = layer(hidden, context=context)
    torch.testing.assert_close(output[3:, 1:], alone, rtol=0, atol=1e-5)
    unpadded = layer(hidden[:, :1], context=LayerContext.for_positions(positions[:1]))
    torch.testing.assert_close(output[:, :1], unpadded, rtol=0, atol=1e-5)
    assert torch.isfinite(output).all()  # padded queries see their own key only


def test_padded_rows_decode_from_the_cache_as_alone() -> None:
    layer, hidden, real, positions, alone = padded_row_case()
    state = InferenceState(max_length=7)
    outputs = []
    for start, end in ((0, 5), (5, 6), (6, 7)):
        context = LayerContext.for_positions(
            positions[:, start:end], attention_mask=real[:, :end], inference=state
        )
        outputs.append(layer(hidden[start:end], context=context))
        state.advance(end - start)
    torch.testing.assert_close(torch.cat(outputs)[3:, 1:], alone, rtol=0, atol=1e-5)


def test_visible_keys_with_a_cache_and_padding() -> None:
    # Two queries after three cached keys; row 1's first two keys are padding.
    padding = torch.tensor([[True] * 5, [False, False, True, True, True]])
    visible = visible_keys(2, 5, padding, causal=True, device=torch.device("cpu"))
    assert visible.shape == (2, 1, 2, 5)
    assert visible[0, 0].tolist() == [[True, True, True, True, False], [True] * 5]
    assert visible[1, 0].tolist() == [
        [False, False, True, True, False],
        [False, False, True, True, True],
    ]
    # A padded query sees its own key, so its softmax is never empty.
    own = visible_keys(2, 2, torch.tensor([[False, True]]), causal=True, device=torch.device("cpu"))
    assert own[0, 0].tolist() == [[True, False], [False, True]]
    full = visible_keys(1, 3, None, causal=False, device=torch.device("cpu"))
    assert full.tolist() == [[[[True, True, True]]]]


def test_visible_keys_errors() -> None:
    cpu = torch.device("cpu")
    with pytest.raises(ValueError, match="the attention mask covers 4 tokens, but there are 5 keys"):
        visible_keys(1, 5, torch.ones(1, 4, dtype=torch.bool), causal=True, device=cpu)
    with pytest.raises(ValueError, match="3 queries but only 2 keys"):
        visible_keys(3, 2, None, causal=True, device=cpu)


class UnmaskedCoreAttention(nn.Module):
    """Causal SDPA that ignores the context: right for a plain forward, wrong for a cache."""

    def __init__(
        self, *, config: TransformerConfig, attention: AttentionConfig, groups: ParallelGroups,
        layer_index: int,
    ) -> None:  # fmt: skip
        super().__init__()

    def forward(self, query: Tensor, key: Tensor, value: Tensor, *, context: LayerContext) -> Tensor:
        return F.scaled_dot_product_attention(query, key, value, is_causal=True)


def test_cache_support_is_the_core_attentions_declaration() -> None:
    attention = AttentionConfig(num_heads=4)
    standard = build_layer(torch_backend.llama_layer_submodules(attention, MLP_CONFIG))
    assert supports_inference_cache(standard) and supports_inference_cache(standard.mixer)
    custom = replace(
        torch_backend.llama_layer_submodules(attention, MLP_CONFIG),
        mixer=SelfAttention.as_mixer_submodule(
            attention,
            replace(torch_backend.attention_submodules(), core_attention=UnmaskedCoreAttention),
        ),
    )
    layer = build_layer(custom)
    assert not supports_inference_cache(layer.mixer) and not supports_inference_cache(layer)


# --- the SDPA kernel choice -------------------------------------------------------------------


def sdpa_attention(backend: SdpaBackend) -> DotProductAttention:
    attention = AttentionConfig(num_heads=4, sdpa_backend=backend)
    return DotProductAttention(
        config=TransformerConfig(hidden_size=HIDDEN, num_layers=1),
        attention=attention,
        groups=SINGLE,
        layer_index=0,
    )


@pytest.mark.parametrize("backend", ["math", "flash"])
def test_a_chosen_sdpa_kernel_computes_what_auto_does(backend: SdpaBackend) -> None:
    # CPU builds of PyTorch have a math and a flash kernel.
    generator = torch.Generator().manual_seed(0)
    query, key, value = (torch.randn(2, 4, 6, 8, generator=generator) for _ in range(3))
    context = LayerContext.for_positions(torch.arange(6))
    expected = sdpa_attention("auto")(query, key, value, context=context)
    actual = sdpa_attention(backend)(query, key, value, context=context)
    torch.testing.assert_close(actual, expected, atol=1e-6, rtol=1e-6)


def test_an_sdpa_kernel_that_cannot_run_is_an_error_not_a_fallback() -> None:
    attention = sdpa_attention("cudnn")  # no cuDNN attention on a CPU
    query = torch.randn(2, 4, 6, 8)
    with pytest.raises(RuntimeError, match="No viable backend for scaled_dot_product_attention"):
        attention(query, query, query, context=LayerContext.for_positions(torch.arange(6)))
