"""Validation of TransformerConfig, AttentionConfig and MlpConfig (megaspec.transformer_config):
each bad value is an error naming the class, the field and the value."""

from __future__ import annotations

import math
import re
from typing import Any

import pytest
import torch

from megaspec.transformer_config import (
    AttentionConfig,
    Llama3RotaryScaling,
    MlpConfig,
    TransformerConfig,
)


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


def test_llama3_rotary_scaling_regions() -> None:
    # Short wavelengths are kept, long ones divided by `factor`, the band between blends the two.
    scaling = Llama3RotaryScaling(factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
                                  original_max_position_embeddings=64)  # fmt: skip
    wavelengths = torch.tensor([4.0, 16.0, 40.0, 64.0, 100.0, 1000.0])
    inverse = 2 * math.pi / wavelengths
    scaled = scaling(inverse)
    torch.testing.assert_close(scaled[:2], inverse[:2])  # <= 64 / 4: unchanged
    torch.testing.assert_close(scaled[4:], inverse[4:] / 8)  # > 64 / 1: stretched
    smooth = (64 / wavelengths[2:4] - 1.0) / 3.0
    torch.testing.assert_close(scaled[2:4], (1 - smooth) * inverse[2:4] / 8 + smooth * inverse[2:4])
    assert Llama3RotaryScaling().explicit_fields == frozenset()


def test_llama3_rotary_scaling_needs_ordered_factors() -> None:
    with pytest.raises(ValueError) as error:
        Llama3RotaryScaling(low_freq_factor=4.0, high_freq_factor=4.0)
    assert str(error.value) == (
        "Llama3RotaryScaling.high_freq_factor: must be greater than low_freq_factor (4.0), got 4.0"
    )
