"""Run-time guards around builders (megaspec.layers.slots): what mypy cannot see fails with a
message naming the slot and the builder.

- Builders that return a non-module, or a module without ``forward``.
- Children whose output has the wrong type or shape.
- A builder call that fails (a ``functools.partial`` missing a keyword).
- The readable names these messages give builders.
"""

from __future__ import annotations

import functools
import re
from dataclasses import replace
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from megaspec.backends import torch as torch_backend
from megaspec.context import LayerContext
from megaspec.layers import (
    MLP,
    BlockSequence,
    BlockSequenceSpec,
    LayerSpec,
    SelfAttention,
    SlotBuildError,
    TransformerLayer,
    TransformerLayerSubmodules,
    describe_builder,
)
from megaspec.parallel import ParallelGroups
from megaspec.transformer_config import AttentionConfig, MlpConfig, TransformerConfig
from tests.helpers.layers import (
    HIDDEN,
    SINGLE,
    IndexedLayer,
    build_gpt,
    build_layer,
    sequence_config,
)

ATTENTION = AttentionConfig(num_heads=4)
MLP_CONFIG = MlpConfig(ffn_hidden_size=48)
MLP_SETTINGS = MlpConfig(ffn_hidden_size=64)


# --- children used by the guard tests --------------------------------------------------------


class IdentityMixer(nn.Module):
    handles_sequence_parallel = False

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

    handles_sequence_parallel = True

    def __init__(
        self, *, config: TransformerConfig, groups: ParallelGroups, layer_index: int, drop: int
    ) -> None:
        super().__init__()
        self.drop = drop

    def forward(self, hidden: Tensor) -> Tensor:
        return hidden[: -self.drop]


class ListMlp(nn.Module):
    handles_sequence_parallel = True

    def __init__(
        self, *, config: TransformerConfig, groups: ParallelGroups, layer_index: int
    ) -> None:
        super().__init__()

    def forward(self, hidden: Tensor) -> Any:
        return [hidden]


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


def context_for(sequence: int, batch: int) -> LayerContext:
    return LayerContext.for_positions(torch.arange(sequence).expand(batch, sequence))


def llama_with(**slots: Any) -> TransformerLayerSubmodules:
    return replace(torch_backend.llama_layer_submodules(ATTENTION, MLP_CONFIG), **slots)


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
    spec = BlockSequenceSpec(pattern=[LayerSpec(IndexedLayer), LayerSpec(int_layer)], num_layers=2)
    with pytest.raises(TypeError) as error:
        BlockSequence(config=sequence_config(2), groups=SINGLE, spec=spec)
    assert str(error.value) == (
        "BlockSequence: builder int_layer for slot 'layers[1]' returned int, "
        "expected a torch.nn.Module"
    )


# --- builders that fail ----------------------------------------------------------------------


def test_partial_missing_a_keyword_names_the_slot_and_builder() -> None:
    # mypy accepts a partial that leaves a required keyword unbound; the build names it.
    llama = torch_backend.llama_layer_submodules(ATTENTION, MLP_SETTINGS)
    incomplete = functools.partial(MLP, mlp=MLP_SETTINGS)
    layer = TransformerLayer.as_layer_submodule(replace(llama, mlp=incomplete))
    with pytest.raises(SlotBuildError) as error:
        build_gpt(BlockSequenceSpec(pattern=[layer], num_layers=1))
    assert str(error.value) == (
        "TransformerLayer (layer 0): building slot 'mlp' with functools.partial(MLP, "
        "mlp=<MlpConfig>) failed: MLP.__init__() missing 1 required keyword-only argument: "
        "'submodules'"
    )


# --- children returning the wrong thing ------------------------------------------------------


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


# --- readable builder names ------------------------------------------------------------------


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
