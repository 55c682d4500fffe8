"""The typed contract between a parent module and the children it builds.

Every slot has a *builder* Protocol: a ``__call__`` with keyword-only parameters carrying the
maximal information the parent gives, returning a *module* Protocol that names ``forward``
(``nn.Module.__call__`` is typed ``Callable[..., Any]``, so mypy checks a child's forward only
through the Protocol's ``forward``). A class whose ``__init__`` has exactly these keywords is a
builder itself; a class that needs fewer or other arguments offers an ``as_<slot>_submodule``
classmethod; one that needs more is bound with ``functools.partial``.

Parents call every builder with all of its keywords and use only what the returned Protocol
declares: they never inspect which class they built.
"""

from __future__ import annotations

from typing import Protocol

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
    """

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
    """

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
    """Normalises the last dimension: ``[..., hidden_size] -> [..., hidden_size]``."""

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

    ``forward``: ``[s, b, hidden]`` (``[s / tp, b, hidden]`` when sequence parallel) -> the same
    shape. Per-call information arrives in ``context``.
    """

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
    """Position-wise feed-forward: ``[s, b, hidden] -> [s, b, hidden]`` (``s / tp`` when SP)."""

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

    ``layer_index`` (the index it was built with) also tells a layer from a mixer, whose
    forward has the same signature: a mixer builder in a block pattern is a type error.
    """

    @property
    def layer_index(self) -> int: ...

    def forward(self, hidden: Tensor, *, context: LayerContext) -> Tensor: ...

    def __call__(self, hidden: Tensor, *, context: LayerContext) -> Tensor: ...


class LayerBuilder(Protocol):
    """Builds a :class:`Layer`; an element of a block sequence's pattern."""

    def __call__(
        self, *, config: TransformerConfig, groups: ParallelGroups, layer_index: int
    ) -> Layer: ...
