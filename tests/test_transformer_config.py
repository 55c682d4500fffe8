"""Validation of TransformerConfig, AttentionConfig and MlpConfig (megaspec.transformer_config):
each bad value is an error naming the class, the field and the value."""

from __future__ import annotations

import re
from typing import Any

import pytest

from megaspec.transformer_config import AttentionConfig, MlpConfig, TransformerConfig


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda: TransformerConfig(hidden_size=0, num_layers=2),
         "TransformerConfig.hidden_size: must be positive, got 0"),
        (lambda: TransformerConfig(hidden_size=32, num_layers=-1),
         "TransformerConfig.num_layers: must be positive, got -1"),
        (lambda: TransformerConfig(hidden_size=32, num_layers=2, norm_epsilon=0.0),
         "TransformerConfig.norm_epsilon: must be positive, got 0.0"),
        (lambda: TransformerConfig(hidden_size=32, num_layers=2, init_std=-0.02),
         "TransformerConfig.init_std: must be positive, got -0.02"),
        (lambda: AttentionConfig(num_heads=0),
         "AttentionConfig.num_heads: must be positive, got 0"),
        (lambda: AttentionConfig(num_heads=4, rotary_base=0.0),
         "AttentionConfig.rotary_base: must be positive, got 0.0"),
        (lambda: AttentionConfig(num_heads=8, num_query_groups=3),
         "AttentionConfig.num_query_groups: 3 must be positive and divide num_heads (8)"),
        (lambda: AttentionConfig(num_heads=8, num_query_groups=0),
         "AttentionConfig.num_query_groups: 0 must be positive and divide num_heads (8)"),
        (lambda: AttentionConfig(num_heads=8, num_query_groups=16),
         "AttentionConfig.num_query_groups: 16 must be positive and divide num_heads (8)"),
        (lambda: AttentionConfig(num_heads=4, rotary_fraction=1.5),
         "AttentionConfig.rotary_fraction: must lie in [0, 1], got 1.5"),
        (lambda: AttentionConfig(num_heads=4, rotary_fraction=-0.25),
         "AttentionConfig.rotary_fraction: must lie in [0, 1], got -0.25"),
        (lambda: MlpConfig(ffn_hidden_size=0),
         "MlpConfig.ffn_hidden_size: must be positive, got 0"),
    ],
)
def test_config_validation(make: Any, expected: str) -> None:
    with pytest.raises(ValueError, match=re.escape(expected) + "$"):
        make()


def test_head_dim_must_be_positive() -> None:
    with pytest.raises(ValueError) as error:
        AttentionConfig(num_heads=4, head_dim=0)
    assert str(error.value) == "AttentionConfig.head_dim: must be positive, got 0"
