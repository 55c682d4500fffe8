"""The inference state (megaspec.inference): preallocated key/value caches written at the
processed length, per-layer states for other mixers, and the cache-support declaration."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from megaspec.inference import InferenceState, KeyValueCache, supports_inference_cache


def test_key_value_cache_is_allocated_once_and_returns_everything_so_far() -> None:
    state = InferenceState(max_length=5)
    key, value = torch.randn(2, 3, 4, 8), torch.randn(2, 3, 4, 8)  # [b, groups, s, d]
    keys, values = state.update_key_value(7, key[:, :, :3], value[:, :, :3])
    assert torch.equal(keys, key[:, :, :3]) and torch.equal(values, value[:, :, :3])
    cache = state.key_value_caches[7]
    assert cache.max_length == 5 and cache.keys.shape == (2, 3, 5, 8)
    state.advance(3)
    keys, values = state.update_key_value(7, key[:, :, 3:], value[:, :, 3:])
    assert torch.equal(keys, key) and torch.equal(values, value)
    assert state.key_value_caches[7] is cache  # written in place, never grown
    assert keys.data_ptr() == cache.keys.data_ptr()


def test_a_call_that_failed_is_overwritten_by_the_next() -> None:
    # Layers write at state.length, which only the model advances: a repeated call replaces.
    state = InferenceState(max_length=3)
    state.update_key_value(0, torch.zeros(1, 1, 2, 4), torch.zeros(1, 1, 2, 4))
    keys, _ = state.update_key_value(0, torch.ones(1, 1, 2, 4), torch.ones(1, 1, 2, 4))
    assert torch.equal(keys, torch.ones(1, 1, 2, 4))


def test_cache_errors() -> None:
    cache = KeyValueCache(torch.zeros(2, 3, 4, 8), torch.zeros(2, 3, 4, 8))
    with pytest.raises(ValueError, match="5 tokens do not fit a cache of max_length 4"):
        cache.update(torch.zeros(2, 3, 2, 8), torch.zeros(2, 3, 2, 8), start=3)
    with pytest.raises(ValueError, match=r"do not fit the cache's \[batch, groups, head_dim\]"):
        cache.update(torch.zeros(2, 2, 1, 8), torch.zeros(2, 2, 1, 8), start=0)
    state = InferenceState(max_length=4)
    state.advance(3)
    with pytest.raises(ValueError, match="5 tokens exceed max_length 4"):
        state.advance(2)
    with pytest.raises(ValueError, match="max_length must be positive, got 0"):
        InferenceState(max_length=0)


def test_layer_state_is_created_once_per_layer() -> None:
    state = InferenceState(max_length=4)
    first = state.layer_state(2, list, lambda: [1])
    assert state.layer_state(2, list, lambda: [2]) is first
    assert state.layer_state(3, list, lambda: [3]) == [3]
    with pytest.raises(TypeError, match="layer 2 holds a list, expected dict"):
        state.layer_state(2, dict, dict)


class Declared(nn.Module):
    supports_inference_cache = True


class DeclaredFalse(nn.Module):
    supports_inference_cache = False


def test_cache_support_must_be_declared_true() -> None:
    assert supports_inference_cache(Declared())
    assert not supports_inference_cache(DeclaredFalse())
    assert not supports_inference_cache(nn.GRU(4, 4))  # undeclared
