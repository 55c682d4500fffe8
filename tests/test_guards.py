"""Run-time guards of the library, on one process.

- Layer counts and patterns are validated (a spec is never silently replicated).
- Config validation errors and vocabulary padding.
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


def sequence_config(num_layers: int) -> TransformerConfig:
    return TransformerConfig(hidden_size=HIDDEN, num_layers=num_layers)


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
