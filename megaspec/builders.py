"""The typed contract between a parent module and the children it builds.

Every slot has a *builder* Protocol: a ``__call__`` with keyword-only parameters carrying the
maximal information the parent gives, returning a *module* Protocol that names ``forward``
(``nn.Module.__call__`` is typed ``Callable[..., Any]``, so mypy checks a child's forward only
through the Protocol's ``forward``). A class whose ``__init__`` has exactly these keywords is a
builder itself; a class that needs fewer or other arguments offers an ``as_<slot>_submodule``
classmethod; one that needs more is bound with ``functools.partial``.

Parents call every builder with all of its keywords and use only what the returned Protocol
declares: they never inspect which class they built.

Module Protocols whose ``forward`` has the same shape are told apart by a member only the
right kind has, so that even a ``functools.partial`` (which mypy checks only by its bound
keywords and its return type) cannot put one in the other's slot:

* ``ColumnLinear.gather_output`` / ``RowLinear.input_is_parallel`` (the keyword each
  builder receives that the other does not);
* ``Norm.eps`` (what ``torch.nn.RMSNorm``, ``torch.nn.LayerNorm`` and megaspec's norms have)
  and ``Mlp.handles_sequence_parallel``;
* a block pattern holds :class:`LayerSpec` values, which only layer builders make, never a
  mixer (whose forward is a layer's).

``handles_sequence_parallel`` is part of the sequence-parallel contract of the mixer, MLP and
layer slots: under ``TransformerConfig.sequence_parallel`` the residual stream is split along
the sequence, ``[s / tp, b, h]`` on each tensor-parallel rank. A child declaring ``True``
takes and returns that slice (it gathers what it needs itself, as ``SelfAttention`` and
``MLP`` do through linears built with ``sequence_parallel=True``). A child declaring
``False`` always sees the whole sequence ``[s, b, h]``: the parent all-gathers it before the
call and keeps this rank's slice of the result, so the child runs replicated on every rank
and needs no tensor-parallel code at all. Without sequence parallelism the flag changes
nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, final

import torch
from torch import Tensor

from megaspec.context import LayerContext
from megaspec.parallel.groups import ParallelGroups
from megaspec.parallel.sharding import InitMethod
from megaspec.transformer_config import AttentionConfig, TransformerConfig

# --- linear layers ---------------------------------------------------------------------


class ColumnLinear(Protocol):
    """A linear layer whose output features are split across tensor-parallel ranks.

    ``forward``: ``[s, b, input_size]`` (``[s / tp, b, input_size]`` when sequence parallel)
    -> ``[s, b, output_size / tp]`` (``[s, b, output_size]`` when gathering its output).
    ``gather_output`` is the value its builder received; only column-parallel layers have it.
    """

    @property
    def gather_output(self) -> bool: ...

    def forward(self, hidden: Tensor) -> Tensor: ...

    def __call__(self, hidden: Tensor) -> Tensor: ...


class ColumnLinearBuilder(Protocol):
    """Builds a :class:`ColumnLinear` (slots ``linear_qkv``, ``linear_fc1``, ...)."""

    def __call__(
        self,
        *,
        input_size: int,
        output_size: int,
        groups: ParallelGroups,
        init_method: InitMethod,
        bias: bool,
        gather_output: bool,
        sequence_parallel: bool,
        stacked_parts: int,
        params_dtype: torch.dtype,
    ) -> ColumnLinear: ...


class RowLinear(Protocol):
    """A linear layer whose input features are split across tensor-parallel ranks.

    ``forward``: ``[s, b, input_size / tp]`` (or ``[s, b, input_size]`` when its input is not
    parallel) -> ``[s, b, output_size]`` (``[s / tp, b, output_size]`` when sequence parallel).
    ``input_is_parallel`` is the value its builder received; only row-parallel layers have it.
    """

    @property
    def input_is_parallel(self) -> bool: ...

    def forward(self, hidden: Tensor) -> Tensor: ...

    def __call__(self, hidden: Tensor) -> Tensor: ...


class RowLinearBuilder(Protocol):
    """Builds a :class:`RowLinear` (slots ``linear_proj``, ``linear_fc2``, ...)."""

    def __call__(
        self,
        *,
        input_size: int,
        output_size: int,
        groups: ParallelGroups,
        init_method: InitMethod,
        bias: bool,
        input_is_parallel: bool,
        sequence_parallel: bool,
        params_dtype: torch.dtype,
    ) -> RowLinear: ...


# --- embeddings ------------------------------------------------------------------------------


class Embedding(Protocol):
    """Token embedding whose rows may be split across tensor-parallel ranks.

    ``forward``: token ids ``[s, b]`` -> ``[s, b, embedding_dim]`` (``[s / tp, b, ...]`` when
    sequence parallel). ``weight`` (``[rows of this rank, embedding_dim]``) is what a tied
    output layer multiplies with.
    """

    @property
    def weight(self) -> Tensor: ...

    def forward(self, token_ids: Tensor) -> Tensor: ...

    def __call__(self, token_ids: Tensor) -> Tensor: ...


class EmbeddingBuilder(Protocol):
    """Builds an :class:`Embedding` (slot ``embedding`` of a language model)."""

    def __call__(
        self,
        *,
        num_embeddings: int,
        embedding_dim: int,
        groups: ParallelGroups,
        init_method: InitMethod,
        sequence_parallel: bool,
        params_dtype: torch.dtype,
    ) -> Embedding: ...


# --- norms -----------------------------------------------------------------------------


class Norm(Protocol):
    """Normalises the last dimension: ``[..., hidden_size] -> [..., hidden_size]``.

    ``eps`` (``config.norm_epsilon`` from the standard builders; ``None`` where a norm picks
    its own, as ``torch.nn.RMSNorm`` may) marks a norm: MLPs and linears have none.
    """

    @property
    def eps(self) -> float | None: ...

    def forward(self, hidden: Tensor) -> Tensor: ...

    def __call__(self, hidden: Tensor) -> Tensor: ...


class NormBuilder(Protocol):
    """Builds a :class:`Norm` (slots ``input_norm``, ``pre_mlp_norm``, ``q_norm``, ...).

    ``sharded_input`` is true when each tensor-parallel rank normalises different data
    (a slice of the sequence under sequence parallelism, or its own attention heads), so the
    gradients of replicated weights must be summed over ranks. ``init_method`` fills the
    scale (the parent passes ones).
    """

    def __call__(
        self,
        *,
        hidden_size: int,
        config: TransformerConfig,
        groups: ParallelGroups,
        sharded_input: bool,
        init_method: InitMethod,
    ) -> Norm: ...


# --- attention ---------------------------------------------------------------------------


class CoreAttention(Protocol):
    """Attention over projected heads of this rank.

    ``forward``: query ``[b, heads, s, head_dim]``, key and value ``[b, query_groups, s,
    head_dim]`` (heads and groups of this rank) -> ``[b, heads, s, head_dim]``.
    """

    def forward(self, query: Tensor, key: Tensor, value: Tensor, *, context: LayerContext) -> Tensor: ...

    def __call__(self, query: Tensor, key: Tensor, value: Tensor, *, context: LayerContext) -> Tensor: ...


class CoreAttentionBuilder(Protocol):
    """Builds a :class:`CoreAttention` (slot ``core_attention`` of self-attention)."""

    def __call__(
        self,
        *,
        config: TransformerConfig,
        attention: AttentionConfig,
        groups: ParallelGroups,
        layer_index: int,
    ) -> CoreAttention: ...


# --- transformer layer slots ---------------------------------------------------------------


class Mixer(Protocol):
    """Mixes information across the sequence (attention, SSM, convolution, ...).

    ``forward``: ``[s, b, hidden]`` -> the same shape; per-call information arrives in
    ``context``. Under sequence parallelism the input is ``[s / tp, b, hidden]`` if
    ``handles_sequence_parallel`` is true; otherwise the layer gathers the whole sequence
    for the call (see the module docstring).
    """

    @property
    def handles_sequence_parallel(self) -> bool: ...

    def forward(self, hidden: Tensor, *, context: LayerContext) -> Tensor: ...

    def __call__(self, hidden: Tensor, *, context: LayerContext) -> Tensor: ...


class MixerBuilder(Protocol):
    """Builds a :class:`Mixer` (slot ``mixer`` of :class:`~megaspec.layers.TransformerLayer`).

    ``layer_index`` counts layers from 0 across the whole model.
    """

    def __call__(
        self, *, config: TransformerConfig, groups: ParallelGroups, layer_index: int
    ) -> Mixer: ...


class Mlp(Protocol):
    """Position-wise feed-forward: ``[s, b, hidden] -> [s, b, hidden]``.

    Under sequence parallelism the input is ``[s / tp, b, hidden]`` if
    ``handles_sequence_parallel`` is true; otherwise the layer gathers the whole sequence
    for the call (see the module docstring).
    """

    @property
    def handles_sequence_parallel(self) -> bool: ...

    def forward(self, hidden: Tensor) -> Tensor: ...

    def __call__(self, hidden: Tensor) -> Tensor: ...


class MlpBuilder(Protocol):
    """Builds an :class:`Mlp` (slot ``mlp`` of :class:`~megaspec.layers.TransformerLayer`)."""

    def __call__(
        self, *, config: TransformerConfig, groups: ParallelGroups, layer_index: int
    ) -> Mlp: ...


# --- layers in a block sequence --------------------------------------------------------------


class Layer(Protocol):
    """One layer of a block sequence: ``[s, b, hidden] -> [s, b, hidden]``.

    Under sequence parallelism the input is ``[s / tp, b, hidden]`` if
    ``handles_sequence_parallel`` is true; otherwise the block sequence gathers the whole
    sequence for the call (see the module docstring).
    """

    @property
    def handles_sequence_parallel(self) -> bool: ...

    def forward(self, hidden: Tensor, *, context: LayerContext) -> Tensor: ...

    def __call__(self, hidden: Tensor, *, context: LayerContext) -> Tensor: ...


class LayerBuilder(Protocol):
    """Builds a :class:`Layer`. ``layer_index`` counts layers from 0 across the whole model."""

    def __call__(
        self, *, config: TransformerConfig, groups: ParallelGroups, layer_index: int
    ) -> Layer: ...


@final
@dataclass(frozen=True)
class LayerSpec:
    """An element of a block pattern that builds one whole layer.

    A nominal wrapper: a mixer builder has a layer builder's signature (and a mixer may well
    store ``layer_index``), but it is not a ``LayerSpec``, so mypy rejects it in a pattern.
    ``TransformerLayer.as_layer_submodule(...)`` returns one; wrap your own layer class as
    ``LayerSpec(MyLayer)`` (or ``LayerSpec(functools.partial(MyLayer, extra=...))``).
    """

    builder: LayerBuilder

    def build(self, *, config: TransformerConfig, groups: ParallelGroups, layer_index: int) -> Layer:
        """Build the layer with the slot's keywords."""
        return self.builder(config=config, groups=groups, layer_index=layer_index)
