"""TransformerLayer's contract with its children at run time: every mixer and MLP declares
how it takes sequence-parallel input, and a partial may not rebind a slot keyword (the
numerical side of the contract is in tests/models/test_tensor_parallel.py)."""

from __future__ import annotations

import functools
from dataclasses import replace
from typing import Any

import pytest
from megaspec.backends import torch as torch_backend
from megaspec.layers import SlotBuildError, TransformerLayer
from megaspec.parallel import ParallelGroups
from megaspec.transformer_config import AttentionConfig, MlpConfig, TransformerConfig
from tests.helpers.layers import IndexedMixer, UndeclaredMixer, undeclared_mixer

LLAMA = torch_backend.llama_layer_submodules(AttentionConfig(num_heads=4), MlpConfig(ffn_hidden_size=128))


def build_layer(**slots: Any) -> TransformerLayer:
    return TransformerLayer(
        config=TransformerConfig(hidden_size=64, num_layers=1),
        groups=ParallelGroups.single(),
        layer_index=0,
        submodules=replace(LLAMA, **slots),
    )


def test_mixer_that_does_not_declare_sequence_parallel_support_is_refused() -> None:
    with pytest.raises(SlotBuildError) as error:
        build_layer(mixer=undeclared_mixer)
    assert str(error.value) == (
        "TransformerLayer (layer 0): builder undeclared_mixer for slot 'mixer' returned "
        "UndeclaredMixer, which does not declare handles_sequence_parallel (True: it takes this "
        "rank's slice of the sequence under sequence parallelism; False: it needs the whole "
        "sequence, which the parent then gathers for it)"
    )


def test_a_declaration_that_is_not_a_bool_is_refused() -> None:
    def text_declared(**keywords: Any) -> Any:
        mixer = UndeclaredMixer(**keywords)
        mixer.handles_sequence_parallel = "no"
        return mixer

    with pytest.raises(SlotBuildError, match="does not declare handles_sequence_parallel"):
        build_layer(mixer=text_declared)


@pytest.mark.parametrize(
    ("builder", "rebound"),
    [
        (functools.partial(IndexedMixer, layer_index=3), "layer_index"),
        (functools.partial(functools.partial(IndexedMixer, width=2), config=None, groups=None),
         "config, groups"),
    ],
)
def test_partial_binding_a_keyword_the_slot_passes_is_refused(builder: Any, rebound: str) -> None:
    # The slot's value would silently replace the bound one at call time.
    with pytest.raises(SlotBuildError) as error:
        build_layer(mixer=builder)
    message = str(error.value)
    assert message.startswith("TransformerLayer (layer 0): builder functools.partial(")
    assert f"for slot 'mixer' binds {rebound}, which the slot passes itself and would silently " \
        "replace" in message


def test_partial_binding_only_extra_keywords_builds() -> None:
    layer = build_layer(mixer=functools.partial(IndexedMixer, width=2))
    assert isinstance(layer.mixer, IndexedMixer)
