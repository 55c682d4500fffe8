"""Small configs, builders and an identity layer shared by the tests of megaspec.layers."""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from megaspec.backends import torch as torch_backend
from megaspec.context import LayerContext
from megaspec.layers import BlockSequenceSpec, TransformerLayer, TransformerLayerSubmodules
from megaspec.models import GPTModel
from megaspec.parallel import ParallelGroups
from megaspec.transformer_config import TransformerConfig

HIDDEN = 32
SINGLE = ParallelGroups.single()


class IndexedLayer(nn.Module):
    """An identity layer that remembers its ``layer_index`` and its builder's tag."""

    handles_sequence_parallel = True  # position-wise

    def __init__(
        self, *, config: TransformerConfig, groups: ParallelGroups, layer_index: int, tag: str = ""
    ) -> None:
        super().__init__()
        self.layer_index = layer_index
        self.tag = tag

    def forward(self, hidden: Tensor, *, context: LayerContext) -> Tensor:
        return hidden


class UndeclaredMixer(nn.Module):
    """A mixer that does not declare handles_sequence_parallel (mypy would reject it)."""

    def __init__(self, *, config: TransformerConfig, groups: ParallelGroups, layer_index: int) -> None:
        super().__init__()

    def forward(self, hidden: Tensor, *, context: LayerContext) -> Tensor:
        return hidden


class IndexedMixer(UndeclaredMixer):
    """A declared mixer that stores ``layer_index``, as many mixers do."""

    handles_sequence_parallel = False

    def __init__(
        self, *, config: TransformerConfig, groups: ParallelGroups, layer_index: int, width: int = 1
    ) -> None:
        super().__init__(config=config, groups=groups, layer_index=layer_index)
        self.layer_index = layer_index


def undeclared_mixer(**keywords: Any) -> Any:
    """A builder typed ``Any`` (mypy cannot see what it returns)."""
    return UndeclaredMixer(**keywords)


def sequence_config(num_layers: int) -> TransformerConfig:
    """A config of hidden size ``HIDDEN`` and ``num_layers`` layers."""
    return TransformerConfig(hidden_size=HIDDEN, num_layers=num_layers)


def build_layer(submodules: TransformerLayerSubmodules, layer_index: int = 0) -> TransformerLayer:
    """One ``TransformerLayer`` of hidden size ``HIDDEN`` built from ``submodules``."""
    config = TransformerConfig(hidden_size=HIDDEN, num_layers=1)
    return TransformerLayer(
        config=config, groups=SINGLE, layer_index=layer_index, submodules=submodules
    )


def build_gpt(layer_spec: BlockSequenceSpec, num_layers: int = 1) -> GPTModel:
    """A GPT model of hidden size ``HIDDEN`` whose blocks are ``layer_spec``."""
    return GPTModel(
        config=TransformerConfig(hidden_size=HIDDEN, num_layers=num_layers),
        vocab_size=128,
        submodules=torch_backend.gpt_submodules(layer_spec),
    )
