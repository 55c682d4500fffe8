"""Per-call inference state for incremental decoding: key/value caches and per-layer states.

Generation runs the prompt once (prefill) and then one new token per call (decode). Between
calls a layer keeps what it needs to continue without recomputing the past:

* attention keeps the keys (after RoPE) and values of every token so far in a
  :class:`KeyValueCache`, preallocated for ``max_length`` tokens and keyed by
  ``layer_index``; under tensor parallelism each rank caches its own heads;
* any other mixer (a convolution, a recurrence, ...) keeps whatever it likes in
  :meth:`InferenceState.layer_state`, also keyed by ``layer_index``.

The state travels in ``LayerContext.inference``: no mixer's signature changes. A mixer that
reads it says so with a class attribute ``supports_inference_cache = True``; see
:func:`supports_inference_cache`. Generation recomputes the whole sequence for every new token
when any layer's mixer does not declare it.

Conventions every cache-capable mixer must follow (``megaspec.models.GPTModel`` sets them up):

* the calls of one generation see consecutive slices of one ``[batch, length]`` token grid,
  ``InferenceState.length`` tokens of which are already cached;
* prompts of different lengths are left-padded: ``LayerContext.attention_mask`` (``[batch,
  length + new tokens]``, ``True`` for real tokens) marks the padding, and the mixer must not
  let padded positions change what real tokens see.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import torch
from torch import Tensor

State = TypeVar("State")


class KeyValueCache:
    """Keys and values of one attention layer, preallocated for a whole generation.

    Shapes: ``keys`` and ``values`` are ``[batch, query_groups of this rank, max_length,
    head_dim]``, the layout the attention kernel reads.
    """

    def __init__(self, keys: Tensor, values: Tensor) -> None:
        self.keys = keys
        self.values = values

    @property
    def max_length(self) -> int:
        """Tokens the cache can hold."""
        return self.keys.shape[2]

    def update(self, key: Tensor, value: Tensor, start: int) -> tuple[Tensor, Tensor]:
        """Store this call's ``key``/``value`` (``[b, groups, s, d]``) at ``start``.

        Returns the keys and values of tokens ``0 .. start + s - 1`` (views of the cache).

        Raises:
            ValueError: if the tokens do not fit, or the shapes differ from the cache's.
        """
        end = start + key.shape[2]
        if end > self.max_length:
            raise ValueError(
                f"KeyValueCache: {end} tokens do not fit a cache of max_length {self.max_length}"
            )
        expected = (self.keys.shape[0], self.keys.shape[1], self.keys.shape[3])
        if (key.shape[0], key.shape[1], key.shape[3]) != expected or key.shape != value.shape:
            raise ValueError(
                f"KeyValueCache: key {tuple(key.shape)} and value {tuple(value.shape)} do not fit "
                f"the cache's [batch, groups, head_dim] = {list(expected)}"
            )
        self.keys[:, :, start:end] = key
        self.values[:, :, start:end] = value
        return self.keys[:, :, :end], self.values[:, :, :end]


class InferenceState:
    """What the layers of one model keep between the calls of one generation.

    ``length`` counts the tokens already processed (padding included); the model advances it
    after each call (:meth:`advance`), so a layer writes this call's tokens at ``length``.

    Args:
        max_length: the most tokens the generation will hold (longest prompt + new tokens);
            caches are allocated at this length on first use.

    Raises:
        ValueError: if ``max_length`` is not positive.
    """

    def __init__(self, *, max_length: int) -> None:
        if max_length <= 0:
            raise ValueError(f"InferenceState: max_length must be positive, got {max_length}")
        self.max_length = max_length
        self.length = 0
        self.key_value_caches: dict[int, KeyValueCache] = {}
        self.layer_states: dict[int, object] = {}

    def update_key_value(self, layer_index: int, key: Tensor, value: Tensor) -> tuple[Tensor, Tensor]:
        """Append this call's keys and values of layer ``layer_index``; return all so far.

        ``key``/``value``: ``[batch, groups, s, head_dim]``; returns ``[batch, groups, length
        + s, head_dim]`` views of the layer's cache (allocated on the first call, in the keys'
        dtype and device).

        Raises:
            ValueError: as :meth:`KeyValueCache.update`.
        """
        cache = self.key_value_caches.get(layer_index)
        if cache is None:
            batch, groups, _, head_dim = key.shape
            shape = (batch, groups, self.max_length, head_dim)
            cache = KeyValueCache(
                torch.empty(shape, dtype=key.dtype, device=key.device),
                torch.empty(shape, dtype=value.dtype, device=value.device),
            )
            self.key_value_caches[layer_index] = cache
        return cache.update(key, value, self.length)

    def layer_state(self, layer_index: int, kind: type[State], create: Callable[[], State]) -> State:
        """The state a mixer keeps for layer ``layer_index``, made by ``create`` on first use.

        Raises:
            TypeError: if the layer's state exists and is not a ``kind``.
        """
        state = self.layer_states.get(layer_index)
        if state is None:
            created = create()
            self.layer_states[layer_index] = created
            return created
        if not isinstance(state, kind):
            raise TypeError(
                f"InferenceState: layer {layer_index} holds a {type(state).__name__}, "
                f"expected {kind.__name__}"
            )
        return state

    def advance(self, tokens: int) -> None:
        """Mark ``tokens`` more tokens as processed (the model calls this after each call).

        Raises:
            ValueError: if that would exceed ``max_length``.
        """
        if self.length + tokens > self.max_length:
            raise ValueError(
                f"InferenceState: {self.length + tokens} tokens exceed max_length {self.max_length}"
            )
        self.length += tokens


def supports_inference_cache(module: object) -> bool:
    """Whether ``module`` declares that it reads ``LayerContext.inference`` and the padding mask.

    A mixer declares it with a class attribute (or property) ``supports_inference_cache =
    True``; an undeclared module does not support it. ``TransformerLayer`` forwards its
    mixer's declaration, and ``SelfAttention`` its core attention's (``DotProductAttention``
    declares it). Position-wise slots (norms, MLPs) need nothing.
    """
    return getattr(module, "supports_inference_cache", False) is True
