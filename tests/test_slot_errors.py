"""Failures mypy cannot see are named at run time: slot, builder and layer."""

from __future__ import annotations

import functools
from dataclasses import replace

import pytest

from megaspec.backends import torch as torch_backend
from megaspec.layers import MLP, BlockSequenceSpec, SlotBuildError, TransformerLayer
from megaspec.models import GPTModel
from megaspec.transformer_config import AttentionConfig, MlpConfig, TransformerConfig

ATTENTION = AttentionConfig(num_heads=4)
MLP_SETTINGS = MlpConfig(ffn_hidden_size=64)


def build(layer_spec: BlockSequenceSpec, num_layers: int = 1) -> GPTModel:
    return GPTModel(
        config=TransformerConfig(hidden_size=32, num_layers=num_layers),
        vocab_size=128,
        submodules=torch_backend.gpt_submodules(layer_spec),
    )


def test_head_dim_must_be_positive() -> None:
    with pytest.raises(ValueError) as error:
        AttentionConfig(num_heads=4, head_dim=0)
    assert str(error.value) == "AttentionConfig.head_dim must be positive, got 0"
