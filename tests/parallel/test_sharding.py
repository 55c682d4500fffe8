"""The shard layouts of megaspec.parallel.sharding, the one place that defines them."""

from __future__ import annotations

import torch

from megaspec.parallel import TensorParallelSharding, full_from_shards, shard_of_full


def test_stacked_parts_shard_each_part() -> None:
    gate = torch.arange(8.0).reshape(4, 2)
    up = 100 + torch.arange(8.0).reshape(4, 2)
    full = torch.cat([gate, up])  # a gated fc1: [gate; up]
    sharding = TensorParallelSharding(dim=0, parts=2)
    shards = [shard_of_full(full, sharding, rank, 2) for rank in range(2)]
    assert torch.equal(shards[0], torch.cat([gate[:2], up[:2]]))
    assert torch.equal(shards[1], torch.cat([gate[2:], up[2:]]))
    assert torch.equal(full_from_shards(shards, sharding), full)


def test_row_parallel_shards_input_features() -> None:
    full = torch.arange(24.0).reshape(2, 12)
    sharding = TensorParallelSharding(dim=1)
    shards = [shard_of_full(full, sharding, rank, 3) for rank in range(3)]
    assert torch.equal(shards[1], full[:, 4:8])
    assert torch.equal(full_from_shards(shards, sharding), full)


def test_uneven_split_is_an_error() -> None:
    try:
        shard_of_full(torch.zeros(6, 2), TensorParallelSharding(dim=0, parts=2), 0, 2)
    except ValueError as error:
        assert str(error) == "dimension 0 of size 6 does not split into 2 part(s) of 2 equal shard(s)"
    else:
        raise AssertionError("expected ValueError")
