"""Block sequences (megaspec.layers.block_sequence): layer counts and patterns are validated,
and a spec is never silently replicated or changed after validation."""

from __future__ import annotations

import functools
import re
from typing import Any

import pytest

from megaspec.backends import torch as torch_backend
from megaspec.layers import BlockSequence, BlockSequenceSpec, LayerSpec, SlotBuildError
from megaspec.models import GPTModel
from megaspec.transformer_config import AttentionConfig, MlpConfig, TransformerConfig
from tests.helpers.layers import (
    HIDDEN,
    SINGLE,
    IndexedLayer,
    IndexedMixer,
    build_gpt,
    sequence_config,
    undeclared_mixer,
)

ATTENTION = AttentionConfig(num_heads=4)
MLP_CONFIG = MlpConfig(ffn_hidden_size=48)
MLP_SETTINGS = MlpConfig(ffn_hidden_size=64)
LLAMA_LAYER = torch_backend.llama_layer_submodules(AttentionConfig(num_heads=4), MLP_SETTINGS)


def indexed(tag: str) -> LayerSpec:
    return LayerSpec(functools.partial(IndexedLayer, tag=tag))


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


def test_pattern_list_changed_after_validation_does_not_change_the_spec() -> None:
    layer = torch_backend.llama_layer(ATTENTION, MLP_SETTINGS)
    pattern = [layer, layer, layer]
    spec = BlockSequenceSpec(pattern=pattern, num_layers=6)
    pattern.append(layer)
    model = build_gpt(spec, num_layers=6)
    assert len(model.blocks.layers) == 6
    assert model.summary().startswith("GPTModel: 6 layers")


# --- what mypy rejects in patterns, refused at run time too -----------------------------------


def test_undeclared_layer_in_a_block_sequence_is_refused() -> None:
    spec = BlockSequenceSpec(pattern=[LayerSpec(undeclared_mixer)], num_layers=1)
    with pytest.raises(SlotBuildError) as error:
        GPTModel(
            config=TransformerConfig(hidden_size=64, num_layers=1),
            vocab_size=256,
            submodules=torch_backend.gpt_submodules(spec),
        )
    assert str(error.value).startswith(
        "BlockSequence: builder undeclared_mixer for slot 'layers[0]' returned UndeclaredMixer, "
        "which does not declare handles_sequence_parallel"
    )


@pytest.mark.parametrize(
    "element",
    [IndexedMixer, functools.partial(IndexedMixer, width=2), LLAMA_LAYER.mixer, LLAMA_LAYER],
    ids=["mixer class", "mixer partial", "mixer builder", "layer submodules"],
)
def test_block_pattern_element_that_is_not_a_layer_spec_is_refused(element: Any) -> None:
    # What mypy rejects statically, for code it does not check.
    with pytest.raises(TypeError) as error:
        BlockSequenceSpec(pattern=[element], num_layers=1)
    assert str(error.value).startswith("BlockSequenceSpec: pattern[0] is ")
    assert str(error.value).endswith(
        ", not a LayerSpec or BlockSequenceSpec; wrap a layer builder as LayerSpec(builder) "
        "(TransformerLayer.as_layer_submodule(...) returns one)"
    )
