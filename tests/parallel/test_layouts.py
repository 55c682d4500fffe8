"""Checkpoint layouts of megaspec.parallel.layouts: fused QKV packed per KV group, [gate; up],
vocabulary padding, and the rows each tensor-parallel rank reads."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from megaspec.parallel import (
    TensorParallelSharding,
    VocabRows,
    gated_fc1_rows,
    pack_gated_fc1,
    pack_qkv,
    pad_vocab_rows,
    qkv_rows,
    row_parallel_columns,
    shard_index,
    shard_of_full,
    unpack_gated_fc1,
    unpack_qkv,
    unpad_vocab_rows,
    vocab_rows,
)

HIDDEN = 6


def separate_qkv(
    heads: int, groups: int, head_dim: int, *trailing: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Distinct values everywhere: query from 0, key from 1000, value from 2000."""
    numel = int(torch.Size(trailing).numel())

    def rows(count: int, offset: int) -> torch.Tensor:
        return (offset + torch.arange(count * numel, dtype=torch.float64)).reshape(count, *trailing)

    return rows(heads * head_dim, 0), rows(groups * head_dim, 1000), rows(groups * head_dim, 2000)


def test_pack_qkv_orders_rows_per_group() -> None:
    # 4 query heads in 2 groups, head_dim 1: [q0, q1, k0, v0, q2, q3, k1, v1].
    query, key, value = separate_qkv(4, 2, 1)
    packed = pack_qkv(query, key, value, num_query_groups=2)
    assert packed.tolist() == [0, 1, 1000, 2000, 2, 3, 1001, 2001]


@pytest.mark.parametrize(("heads", "groups"), [(4, 4), (8, 2), (6, 1)])
@pytest.mark.parametrize("trailing", [(HIDDEN,), ()], ids=["weight", "bias"])
def test_unpack_qkv_inverts_pack(heads: int, groups: int, trailing: tuple[int, ...]) -> None:
    query, key, value = separate_qkv(heads, groups, 3, *trailing)
    packed = pack_qkv(query, key, value, groups)
    assert packed.shape == (groups * (heads // groups + 2) * 3, *trailing)
    unpacked = unpack_qkv(packed, heads, groups)
    for original, recovered in zip((query, key, value), unpacked):
        assert torch.equal(recovered, original)
        assert recovered.is_contiguous()


@pytest.mark.parametrize(
    ("heads", "groups", "naive_is_right"), [(8, 2, False), (4, 4, False), (4, 1, True)]
)
def test_naive_concatenation_is_wrong_unless_one_group(
    heads: int, groups: int, naive_is_right: bool
) -> None:
    # The bug converters make: [q; k; v] has the packed shape but, with more than one KV group,
    # puts other groups' heads where a group's key and value belong.
    query, key, value = separate_qkv(heads, groups, 2, HIDDEN)
    packed = pack_qkv(query, key, value, groups)
    naive = torch.cat([query, key, value])
    assert naive.shape == packed.shape
    assert torch.equal(naive, packed) is naive_is_right
    if not naive_is_right:
        # Reading the naive tensor as megaspec does recovers the wrong keys.
        _, naive_key, _ = unpack_qkv(naive, heads, groups)
        assert not torch.equal(naive_key, key)


def test_gated_fc1_is_gate_then_up() -> None:
    gate, up = torch.randn(8, HIDDEN), torch.randn(8, HIDDEN)
    fc1 = pack_gated_fc1(gate, up)
    assert torch.equal(fc1[:8], gate) and torch.equal(fc1[8:], up)
    recovered_gate, recovered_up = unpack_gated_fc1(fc1)
    assert torch.equal(recovered_gate, gate) and torch.equal(recovered_up, up)


def test_vocab_padding_round_trip() -> None:
    embedding = torch.randn(300, HIDDEN)
    padded = pad_vocab_rows(embedding, 384)
    assert padded.shape == (384, HIDDEN)
    assert torch.count_nonzero(padded[300:]) == 0
    assert torch.equal(unpad_vocab_rows(padded, 300), embedding)
    assert pad_vocab_rows(embedding, 300) is embedding


@settings(max_examples=40, deadline=None)
@given(
    groups=st.sampled_from([1, 2, 4]),
    per_group=st.integers(1, 3),
    head_dim=st.integers(1, 4),
    size=st.sampled_from([1, 2, 4]),
)
def test_qkv_rank_pieces_are_the_shard_of_the_packed_tensor(
    groups: int, per_group: int, head_dim: int, size: int
) -> None:
    if groups % size != 0:
        return
    heads = groups * per_group
    for trailing in ((HIDDEN,), ()):
        query, key, value = separate_qkv(heads, groups, head_dim, *trailing)
        full = pack_qkv(query, key, value, groups)
        for rank in range(size):
            rows = qkv_rows(heads, groups, head_dim, rank, size)
            piece = pack_qkv(query[rows.query], key[rows.key], value[rows.value], rows.groups)
            expected = shard_of_full(full, TensorParallelSharding(dim=0), rank, size)
            assert torch.equal(piece, expected)


@pytest.mark.parametrize("size", [1, 2, 4])
def test_gated_fc1_rank_pieces_are_the_shard_of_the_packed_tensor(size: int) -> None:
    gate, up = torch.randn(8, HIDDEN), torch.randn(8, HIDDEN)
    full = pack_gated_fc1(gate, up)
    for rank in range(size):
        rows = gated_fc1_rows(8, rank, size)
        piece = pack_gated_fc1(gate[rows.gate], up[rows.up])
        expected = shard_of_full(full, TensorParallelSharding(dim=0, parts=2), rank, size)
        assert torch.equal(piece, expected)


@pytest.mark.parametrize("size", [1, 2, 4])
def test_row_parallel_columns_are_the_shard(size: int) -> None:
    full = torch.randn(HIDDEN, 16)
    for rank in range(size):
        piece = full[:, row_parallel_columns(16, rank, size)]
        assert torch.equal(piece, shard_of_full(full, TensorParallelSharding(dim=1), rank, size))


@pytest.mark.parametrize("size", [1, 2, 4])
def test_vocab_rank_rows_are_the_shard_of_the_padded_tensor(size: int) -> None:
    # 300 tokens padded to 384 (size 1), 512 (2: rank 1 holds 44 real rows) or 512 (4: rank 3
    # holds padding only).
    embedding = torch.randn(300, HIDDEN)
    padded_size = {1: 384, 2: 512, 4: 512}[size]  # a multiple of size x 128
    full = pad_vocab_rows(embedding, padded_size)
    for rank in range(size):
        rows = vocab_rows(300, padded_size, rank, size)
        piece = pad_vocab_rows(embedding[rows.rows], padded_size // size)
        assert rows.padding == padded_size // size - (rows.rows.stop - rows.rows.start)
        assert torch.equal(piece, shard_of_full(full, TensorParallelSharding(dim=0), rank, size))
    assert vocab_rows(300, 512, 1, 2) == VocabRows(rows=slice(256, 300), padding=212)
    assert vocab_rows(300, 512, 3, 4) == VocabRows(rows=slice(384, 384), padding=128)


@pytest.mark.parametrize(
    "sharding", [TensorParallelSharding(0), TensorParallelSharding(0, 2), TensorParallelSharding(1)]
)
@pytest.mark.parametrize("size", [1, 2, 4])
def test_shard_index_reads_the_shard(sharding: TensorParallelSharding, size: int) -> None:
    full = torch.randn(16, 8)
    for rank in range(size):
        pieces = [full[index] for index in shard_index(tuple(full.shape), sharding, rank, size)]
        expected = shard_of_full(full, sharding, rank, size)
        assert torch.equal(torch.cat(pieces, dim=sharding.dim), expected)


def test_uneven_splits_are_errors() -> None:
    with pytest.raises(ValueError) as error:
        qkv_rows(num_heads=6, num_query_groups=3, head_dim=2, rank=0, size=2)
    assert str(error.value) == "3 rows or columns do not split into 2 equal shard(s)"
    with pytest.raises(ValueError) as error:
        pack_qkv(torch.zeros(6, 2), torch.zeros(4, 2), torch.zeros(4, 2), num_query_groups=2)
    assert str(error.value) == (
        "pack_qkv: query [6, 2] is not a whole number of heads of width 2 per group for key "
        "[4, 2] (2 groups)"
    )

