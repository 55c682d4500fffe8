"""Checkpoint layouts: separate q/k/v, gate/up and unpadded vocabularies <-> megaspec's fused,
padded tensors, and the rows of each that one tensor-parallel rank needs.

Checkpoint formats (Hugging Face, Megatron-core) store what megaspec fuses: attention as
separate ``q_proj`` ``[heads * head_dim, hidden]``, ``k_proj`` and ``v_proj`` ``[groups *
head_dim, hidden]``; a gated MLP's first layer as ``gate_proj`` and ``up_proj``; the
vocabulary unpadded. This module is the one place that converts between them, next to
:mod:`megaspec.parallel.sharding`, which defines how the fused tensors are split over ranks:

* fused QKV is packed per KV group, ``[q heads of g, k_g, v_g]`` for each group g. A naive
  ``[q; k; v]`` has the same shape and silently mixes heads of different groups under
  grouped-query attention (and breaks tensor-parallel sharding, which hands out whole groups);
* a gated fc1 is ``[gate; up]``, and rank r holds ``[gate_r; up_r]``;
* vocabulary rows are padded with zeros to megaspec's padded size.

Every function works on full (tensor-parallel size 1) tensors along dimension 0, so it fits
weights ``[rows, in]`` and biases ``[rows]`` alike. The ``*_rows`` / ``*_columns`` functions
say which part of a checkpoint tensor rank ``rank`` of ``size`` needs, so a reader can slice
a file (``safetensors.safe_open(...).get_slice(name)[rows]``) without loading the full
tensor; packing the pieces gives exactly ``shard_of_full`` of the packed full tensor.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from megaspec.parallel.sharding import TensorParallelSharding


def pack_qkv(query: Tensor, key: Tensor, value: Tensor, num_query_groups: int) -> Tensor:
    """megaspec's fused QKV from separate projections, packed per KV group.

    Shapes: ``query [heads * head_dim, ...]``, ``key`` and ``value [groups * head_dim, ...]``
    -> ``[groups * (heads / groups + 2) * head_dim, ...]``, rows ``[q heads of g, k_g, v_g]``
    for each group g.

    Raises:
        ValueError: if the shapes do not describe ``num_query_groups`` groups of whole heads.
    """
    if key.shape != value.shape or key.shape[0] % num_query_groups != 0:
        raise ValueError(
            f"pack_qkv: key {list(key.shape)} and value {list(value.shape)} must have the same "
            f"shape, with rows divisible by num_query_groups ({num_query_groups})"
        )
    head_dim = key.shape[0] // num_query_groups
    trailing = tuple(key.shape[1:])
    if tuple(query.shape[1:]) != trailing or query.shape[0] % (num_query_groups * head_dim) != 0:
        raise ValueError(
            f"pack_qkv: query {list(query.shape)} is not a whole number of heads of width "
            f"{head_dim} per group for key {list(key.shape)} ({num_query_groups} groups)"
        )
    grouped_query = query.reshape(num_query_groups, -1, *trailing)  # [groups, per_group * d, ...]
    grouped_key = key.reshape(num_query_groups, head_dim, *trailing)  # [groups, d, ...]
    grouped_value = value.reshape(num_query_groups, head_dim, *trailing)
    packed = torch.cat([grouped_query, grouped_key, grouped_value], dim=1)
    return packed.reshape(-1, *trailing)


def unpack_qkv(qkv: Tensor, num_heads: int, num_query_groups: int) -> tuple[Tensor, Tensor, Tensor]:
    """Inverse of :func:`pack_qkv`: contiguous ``(query, key, value)``.

    Raises:
        ValueError: if ``qkv``'s rows are not ``groups * (heads / groups + 2)`` whole heads.
    """
    if num_heads % num_query_groups != 0:
        raise ValueError(
            f"unpack_qkv: num_query_groups ({num_query_groups}) does not divide num_heads "
            f"({num_heads})"
        )
    per_group = num_heads // num_query_groups
    heads_in_rows = num_query_groups * (per_group + 2)
    if qkv.shape[0] % heads_in_rows != 0:
        raise ValueError(
            f"unpack_qkv: {qkv.shape[0]} rows are not {heads_in_rows} heads of equal width "
            f"({num_heads} query heads in {num_query_groups} groups, plus a key and a value each)"
        )
    head_dim = qkv.shape[0] // heads_in_rows
    trailing = tuple(qkv.shape[1:])
    grouped = qkv.reshape(num_query_groups, (per_group + 2) * head_dim, *trailing)
    query, key, value = torch.split(grouped, [per_group * head_dim, head_dim, head_dim], dim=1)
    return (
        query.reshape(-1, *trailing).contiguous(),
        key.reshape(-1, *trailing).contiguous(),
        value.reshape(-1, *trailing).contiguous(),
    )


def pack_gated_fc1(gate: Tensor, up: Tensor) -> Tensor:
    """A gated MLP's fc1 ``[gate; up]`` from its two halves (``[ffn, ...]`` each).

    Raises:
        ValueError: if the halves' shapes differ.
    """
    if gate.shape != up.shape:
        raise ValueError(
            f"pack_gated_fc1: gate {list(gate.shape)} and up {list(up.shape)} differ in shape"
        )
    return torch.cat([gate, up], dim=0)


def unpack_gated_fc1(fc1: Tensor) -> tuple[Tensor, Tensor]:
    """Inverse of :func:`pack_gated_fc1`: contiguous ``(gate, up)``.

    Raises:
        ValueError: if ``fc1`` has an odd number of rows.
    """
    if fc1.shape[0] % 2 != 0:
        raise ValueError(f"unpack_gated_fc1: {fc1.shape[0]} rows do not split into gate and up")
    gate, up = fc1.chunk(2, dim=0)
    return gate.contiguous(), up.contiguous()


def pad_vocab_rows(tensor: Tensor, padded_rows: int) -> Tensor:
    """``tensor [vocab, ...]`` followed by zero rows up to ``padded_rows``.

    Raises:
        ValueError: if ``tensor`` already has more rows than ``padded_rows``.
    """
    missing = padded_rows - tensor.shape[0]
    if missing < 0:
        raise ValueError(
            f"pad_vocab_rows: {tensor.shape[0]} rows exceed the padded size {padded_rows}"
        )
    if missing == 0:
        return tensor
    padding = tensor.new_zeros((missing, *tensor.shape[1:]))
    return torch.cat([tensor, padding], dim=0)


def unpad_vocab_rows(tensor: Tensor, vocab_size: int) -> Tensor:
    """The first ``vocab_size`` rows of a padded vocabulary tensor, contiguous.

    Raises:
        ValueError: if ``tensor`` has fewer than ``vocab_size`` rows.
    """
    if tensor.shape[0] < vocab_size:
        raise ValueError(
            f"unpad_vocab_rows: {tensor.shape[0]} rows are fewer than vocab_size {vocab_size}"
        )
    return tensor[:vocab_size].contiguous()


# --- what one tensor-parallel rank needs ------------------------------------------------------


def rank_block(total: int, rank: int, size: int) -> slice:
    """Rank ``rank``'s contiguous share of ``total`` items split evenly over ``size`` ranks.

    Raises:
        ValueError: if ``total`` does not split evenly, or ``rank`` is not in ``[0, size)``.
    """
    if not 0 <= rank < size:
        raise ValueError(f"rank {rank} is not in [0, {size})")
    if total % size != 0:
        raise ValueError(f"{total} rows or columns do not split into {size} equal shard(s)")
    share = total // size
    return slice(rank * share, (rank + 1) * share)


@dataclass(frozen=True)
class QkvRows:
    """The rows of the separate ``query``, ``key`` and ``value`` tensors that one rank's fused
    QKV shard is made of: its ``groups`` KV groups and their query heads.
    ``pack_qkv(q[query], k[key], v[value], groups)`` is the rank's shard."""

    query: slice
    key: slice
    value: slice
    groups: int


def qkv_rows(num_heads: int, num_query_groups: int, head_dim: int, rank: int, size: int) -> QkvRows:
    """The q/k/v rows of rank ``rank`` of ``size`` (ranks own whole KV groups).

    Raises:
        ValueError: if the groups do not split evenly over ``size`` ranks, or the heads not
            over the groups.
    """
    if num_heads % num_query_groups != 0:
        raise ValueError(
            f"num_query_groups ({num_query_groups}) does not divide num_heads ({num_heads})"
        )
    groups = rank_block(num_query_groups, rank, size)
    per_group_rows = num_heads // num_query_groups * head_dim
    return QkvRows(
        query=slice(groups.start * per_group_rows, groups.stop * per_group_rows),
        key=slice(groups.start * head_dim, groups.stop * head_dim),
        value=slice(groups.start * head_dim, groups.stop * head_dim),
        groups=groups.stop - groups.start,
    )


@dataclass(frozen=True)
class GatedFc1Rows:
    """The rows of ``gate`` and of ``up`` that one rank's fc1 shard ``[gate_r; up_r]`` holds."""

    gate: slice
    up: slice


def gated_fc1_rows(ffn_hidden_size: int, rank: int, size: int) -> GatedFc1Rows:
    """Rank ``rank``'s gate and up rows: the same block of each half.

    Raises:
        ValueError: if ``ffn_hidden_size`` does not split evenly.
    """
    rows = rank_block(ffn_hidden_size, rank, size)
    return GatedFc1Rows(gate=rows, up=rows)


def row_parallel_columns(input_size: int, rank: int, size: int) -> slice:
    """The input-feature columns of a row-parallel weight ``[out, in]`` that rank ``rank`` holds.

    Raises:
        ValueError: if ``input_size`` does not split evenly.
    """
    return rank_block(input_size, rank, size)


@dataclass(frozen=True)
class VocabRows:
    """One rank's share of a padded vocabulary: the real ``rows`` it reads from the unpadded
    tensor, followed by ``padding`` zero rows."""

    rows: slice
    padding: int


def vocab_rows(vocab_size: int, padded_vocab_size: int, rank: int, size: int) -> VocabRows:
    """Rank ``rank``'s rows of a vocabulary of ``vocab_size`` padded to ``padded_vocab_size``
    (a rank may hold padding only).

    Raises:
        ValueError: if the padded size is smaller than the vocabulary or does not split evenly.
    """
    if padded_vocab_size < vocab_size:
        raise ValueError(
            f"padded vocabulary {padded_vocab_size} is smaller than vocab_size {vocab_size}"
        )
    owned = rank_block(padded_vocab_size, rank, size)
    real_stop = max(owned.start, min(owned.stop, vocab_size))
    return VocabRows(rows=slice(owned.start, real_stop), padding=owned.stop - real_stop)


def shard_index(
    shape: tuple[int, ...], sharding: TensorParallelSharding, rank: int, size: int
) -> list[tuple[slice, ...]]:
    """Indices into a full tensor of ``shape`` whose pieces, concatenated along
    ``sharding.dim``, are ``shard_of_full(full, sharding, rank, size)`` (one piece per stacked
    part), for reading a shard of a megaspec-layout tensor from a file.

    Raises:
        ValueError: if the dimension does not split into the parts and shards.
    """
    total = shape[sharding.dim]
    if total % sharding.parts != 0:
        raise ValueError(
            f"dimension {sharding.dim} of size {total} does not split into {sharding.parts} part(s)"
        )
    part_size = total // sharding.parts
    own = rank_block(part_size, rank, size)
    indices = []
    for part in range(sharding.parts):
        index = [slice(None)] * len(shape)
        index[sharding.dim] = slice(part * part_size + own.start, part * part_size + own.stop)
        indices.append(tuple(index))
    return indices
